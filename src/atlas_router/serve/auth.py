"""API keys: kept only as sha256 digests and compared in constant time.

Keys come from the gateway config (``api_keys_sha256``, ``admin_keys_sha256``: digests only) and from
the ``ATLAS_API_KEYS`` / ``ATLAS_ADMIN_KEYS`` environment variables (comma-separated plain keys). Removing
a variable with ``os.environ.pop`` does not remove it from ``/proc/PID/environ`` (the kernel keeps the
environment the process was started with), so ``atlas serve`` first calls ``scrub_key_environ``: it
hashes the plain keys and re-executes itself with only the digests in its environment (read, like every
variable, through ``atlas_router.config``: ``secret``, ``env``, ``subprocess_env``). Admin keys guard
/admin (and /metrics); an API key cannot reload the gateway. With no keys at all, the gateway is open
(``atlas serve`` binds to loopback by default and says so in its log).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from collections.abc import Iterable

from atlas_router.config import env as config_env, secret, subprocess_env

ENV_VAR = "ATLAS_API_KEYS"
ADMIN_ENV_VAR = "ATLAS_ADMIN_KEYS"
DIGEST_SUFFIX = "_SHA256"  # ATLAS_API_KEYS_SHA256: the digests a re-executed gateway inherits


def digest(key: str) -> str:
    """sha256 hex digest of a key: what the config stores and what requests are compared by."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """The accepted key digests. ``check`` hashes the presented key and compares against every digest."""

    def __init__(self, digests: Iterable[str] = ()) -> None:
        self._digests = [bytes.fromhex(d) for d in dict.fromkeys(d.lower() for d in digests)]

    @classmethod
    def from_sources(cls, config_digests: Iterable[str] = (), environ: dict[str, str] | None = None,
                     consume_env: bool = True, admin: bool = False) -> "KeyRing":
        """Digests from the config, plus the hashed keys of ``ATLAS_API_KEYS`` (``ATLAS_ADMIN_KEYS`` when
        ``admin``; dropped from the env) and the digests of ``ATLAS_API_KEYS_SHA256`` (left by
        ``scrub_key_environ``)."""
        name = ADMIN_ENV_VAR if admin else ENV_VAR
        if environ is None:  # the process environment, through the config's accessors
            raw, hashed = secret(name, consume=consume_env), config_env(name + DIGEST_SUFFIX)
        else:
            raw = environ.pop(name, None) if consume_env else environ.get(name)
            hashed = environ.get(name + DIGEST_SUFFIX)
        digests = list(config_digests)
        if raw:
            digests += [digest(k.strip()) for k in raw.split(",") if k.strip()]
        del raw
        digests += [d.strip() for d in (hashed or "").split(",") if len(d.strip()) == 64]
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


def scrub_key_environ(environ: dict[str, str] | None = None, argv: list[str] | None = None) -> None:
    """Replace plain keys in the environment by their digests and re-execute this process, so the plain
    keys are gone from ``/proc/PID/environ`` too (the pid stays the same). A no-op without plain keys."""
    env = subprocess_env() if environ is None else dict(environ)
    plain = [name for name in (ENV_VAR, ADMIN_ENV_VAR) if name in env]
    if not plain:
        return
    for name in plain:
        keys = [k.strip() for k in env.pop(name).split(",") if k.strip()]
        old = [d for d in env.get(name + DIGEST_SUFFIX, "").split(",") if d]
        env[name + DIGEST_SUFFIX] = ",".join(old + [digest(k) for k in keys])
    args = argv or [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(args[0], args, env)
