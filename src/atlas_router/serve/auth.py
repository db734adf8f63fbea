"""API keys: kept only as sha256 digests and compared in constant time.

Keys come from the gateway config (``api_keys_sha256``, digests only) and from the ``ATLAS_API_KEYS``
environment variable (comma-separated plain keys), which is hashed at start-up and then removed from the
process environment so the plain keys do not outlive start-up. With no keys at all, the gateway is open
(``atlas serve`` binds to loopback by default and says so in its log).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

ENV_VAR = "ATLAS_API_KEYS"


def digest(key: str) -> str:
    """sha256 hex digest of a key: what the config stores and what requests are compared by."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """The accepted key digests. ``check`` hashes the presented key and compares against every digest."""

    def __init__(self, digests: Iterable[str] = ()) -> None:
        self._digests = [bytes.fromhex(d) for d in dict.fromkeys(d.lower() for d in digests)]

    @classmethod
    def from_sources(cls, config_digests: Iterable[str] = (), environ: dict[str, str] | None = None,
                     consume_env: bool = True) -> "KeyRing":
        """Digests from the config plus the hashed keys of ``ATLAS_API_KEYS`` (dropped from the env)."""
        env = os.environ if environ is None else environ
        raw = env.pop(ENV_VAR, None) if consume_env else env.get(ENV_VAR)
        digests = list(config_digests)
        if raw:
            digests += [digest(k.strip()) for k in raw.split(",") if k.strip()]
        del raw
        return cls(digests)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, presented: str | None) -> str | None:
        """The short id (first 8 hex digits of the digest) of a valid key, else None.

        Every stored digest is compared (no early exit), each with ``hmac.compare_digest``.
        """
        if not presented:
            return None
        d = hashlib.sha256(presented.encode("utf-8")).digest()
        match = None
        for stored in self._digests:
            if hmac.compare_digest(d, stored):
                match = stored
        return match.hex()[:8] if match is not None else None


def bearer_token(authorization: str | None, api_key_header: str | None = None) -> str | None:
    """The key of ``Authorization: Bearer KEY`` (what the openai client sends) or of ``x-api-key``."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return api_key_header.strip() if api_key_header else None
