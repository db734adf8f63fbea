"""Gateway settings: limits, timeouts, breaker thresholds and API key digests, from an optional YAML file.

The pool file says what can be routed to; this file says how the gateway protects itself and its
upstreams. Keys are stored as sha256 digests (``api_keys_sha256``), never in plain text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from atlas_router.config import validated
from atlas_router.errors import ConfigError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class RecordsSettings(BaseModel):
    """Where the gateway writes a record per answered request, and how much of the prompt it keeps
    (off: none, hashed: a salted hash, full: the text; only full records can refit a router)."""

    model_config = ConfigDict(extra="forbid")
    dir: str
    prompts: Literal["off", "hashed", "full"] = "off"
    flush_s: float = Field(5.0, gt=0)


class GatewaySettings(BaseModel):
    """How the gateway admits, times out, retries and falls back. Defaults suit one host."""

    model_config = ConfigDict(extra="forbid")
    api_keys_sha256: list[str] = Field(default_factory=list)
    admin_keys_sha256: list[str] = Field(default_factory=list)  # for /admin and /metrics; API keys cannot
    max_body_bytes: int = Field(1_048_576, gt=0)
    max_concurrency: int = Field(64, gt=0)
    max_queue: int = Field(256, ge=0)
    queue_timeout_s: float = Field(30.0, gt=0)
    request_timeout_s: float = Field(300.0, gt=0)
    attempt_timeout_s: float = Field(120.0, gt=0)
    max_attempts: int = Field(3, gt=0)
    breaker_failures: int = Field(5, gt=0)
    breaker_cooldown_s: float = Field(30.0, gt=0)
    metrics_public: bool | None = None  # None: public only while the gateway has no keys
    graceful_timeout_s: float = Field(30.0, gt=0)
    records: RecordsSettings | None = None  # off unless set (atlas serve --records DIR)

    @field_validator("api_keys_sha256", "admin_keys_sha256")
    @classmethod
    def _hex_digests(cls, v: list[str]) -> list[str]:
        out = [d.strip().lower() for d in v]
        bad = [d for d in out if not _HEX64.match(d)]
        if bad:
            raise ValueError("entries must be 64 hex digits (sha256 of the key)")
        return out


def load_gateway_settings(path: str | os.PathLike[str] | None) -> GatewaySettings:
    """Settings from a YAML file, or the defaults when no path is given; errors name the field."""
    if path is None:
        return GatewaySettings()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{p}: gateway config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read gateway config: {err}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{p}: broken YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of gateway settings")
    return validated(GatewaySettings, data, str(p))
