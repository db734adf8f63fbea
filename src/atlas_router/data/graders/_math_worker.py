"""Child process of ``graders.math``: answers one JSON line per request with ``{"ok": bool}``.

It runs the check on its own main thread, where math-verify's ``signal.alarm`` timeouts work.
"""

from __future__ import annotations

import json
import sys

from atlas_router.data.graders.math import verify_answer


def main() -> None:
    for line in sys.stdin:
        try:
            job = json.loads(line)
            ok = verify_answer(str(job["gold"]), str(job["prediction"]), int(job.get("timeout", 5)))
        except Exception:  # a broken request or a math-verify failure is a "no", never a dead worker
            ok = False
        sys.stdout.write(json.dumps({"ok": bool(ok)}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
