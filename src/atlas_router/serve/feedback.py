"""``POST /v1/feedback``: a user's score for an answer, kept as a record and fed to the online router.

Body: ``{"id": "<chat completion id>", "score": S}`` where S is a number in [0, 1] or a thumb (``"up"``
= 1, ``"down"`` = 0); ``response_id`` may stand for ``id``. The API keys of chat guard it (it lives under
/v1). An unknown id is a 404, a bad score a 400. The feedback is written as a record (``source =
"feedback"``, see ``atlas_router.records.feedback`` for how ``atlas fit`` uses it) and, when the answer
came from a cluster router served online (``online_routers``), added to that router's feedback counts
(``routers.feedback.OnlineClusterRouter``), which move its next decisions without a refit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atlas_router.errors import AtlasError

THUMBS = {"up": 1.0, "down": 0.0, "thumbs_up": 1.0, "thumbs_down": 0.0}
log = logging.getLogger("atlas.gateway")


class FeedbackError(AtlasError):
    """A feedback request that cannot be taken: HTTP status, code and the field at fault."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def parse_feedback(raw: bytes) -> tuple[str, float]:
    """(response id, score in [0, 1]) of a feedback body; FeedbackError 400 naming the field otherwise."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise FeedbackError(400, "feedback body must be JSON: {\"id\": \"chatcmpl-...\", \"score\": 0..1}",
                            "bad_request") from None
    if not isinstance(body, dict):
        raise FeedbackError(400, "feedback body must be an object: {\"id\": \"chatcmpl-...\", \"score\": 0..1}",
                            "bad_request")
    unknown = set(body) - {"id", "response_id", "score"}
    if unknown:
        raise FeedbackError(400, f"unknown feedback field(s): {', '.join(sorted(unknown))}", "bad_request",
                            sorted(unknown)[0])
    rid = body.get("id", body.get("response_id"))
    if not isinstance(rid, str) or not rid.strip():
        raise FeedbackError(400, "feedback needs 'id': the id of the chat completion it scores", "bad_request", "id")
    score = body.get("score")
    if isinstance(score, str) and score.strip().lower() in THUMBS:
        return rid.strip(), THUMBS[score.strip().lower()]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) \
            or not 0.0 <= float(score) <= 1.0:
        raise FeedbackError(400, f"feedback 'score' must be a number in [0, 1] or 'up'/'down', got {score!r}",
                            "bad_score", "score")
    return rid.strip(), float(score)


async def take_feedback(raw: bytes, sink: Any, routers: Any, key_id: str | None) -> dict[str, Any]:
    """Validate, find the answer, write the feedback record, feed the online router; the reply body."""
    if sink is None:
        raise FeedbackError(404, "this gateway keeps no records, so it takes no feedback (start it with "
                            "--records DIR or 'records:' in its config)", "feedback_disabled")
    rid, score = parse_feedback(raw)
    target = await sink.lookup(rid)
    if target is None:
        raise FeedbackError(404, f"no answer with id '{rid}' in this gateway's records", "response_not_found", "id")
    row = sink.feedback(target, score, key_id)
    online = await asyncio.to_thread(_feed_online, routers, target, score)
    return {"id": row["query_id"], "object": "feedback", "response_id": rid, "score": score,
            "model": target["model"], "tool": target["tool"], "online": online}


def _feed_online(routers: Any, target: dict[str, Any], score: float) -> bool:
    """Add the feedback to the online router that answered (or the served cluster router after a restart);
    True when one took it. Needs the prompt text (in memory for recent answers, else ``prompts: full``)."""
    question = target.get("question") or ""
    if not question or routers is None:
        return False
    name = target.get("router") or "atlas-cluster"
    resolved = routers.resolve(name) if routers.is_router_name(name) else None
    router = resolved[1] if resolved else None
    if not callable(getattr(router, "record", None)) or (target["model"], target["tool"]) not in set(router.pairs_):
        return False
    cost = target.get("cost")
    cost = float(cost) if cost is not None and math.isfinite(float(cost)) and float(cost) >= 0 else None
    try:
        router.record(question, target["model"], target["tool"], score, cost)
    except Exception as err:  # the record is written; the live counts are a bonus
        log.warning("feedback not added to the online router", extra={"event": "feedback", "error": str(err)})
        return False
    return True


def online_routers(routers: dict[str, Any], loaders: dict[str, Callable[[], Any]], directory: str | Path
                   ) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
    """Serve every fitted cluster router online: feedback counts persist in ``<dir>/online/`` under the
    router's fingerprint, so a restart keeps them and a refitted router starts with none (its records
    already hold the feedback)."""
    from atlas_router.routers.feedback import FeedbackStore, OnlineClusterRouter, router_fingerprint

    def wrap(router: Any) -> Any:
        if not hasattr(router, "centroids_") or isinstance(router, OnlineClusterRouter):
            return router
        fp = router_fingerprint(router)
        tag = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(directory).expanduser() / "online" / f"{tag}.feedback.json"
        return OnlineClusterRouter(router, FeedbackStore(path, fp))

    out = {name: wrap(r) for name, r in routers.items()}
    wrapped_loaders = {name: (lambda load=load: wrap(load())) for name, load in loaders.items()}
    return out, wrapped_loaders
