"""Suite-wide fixtures: the shared data path, an isolated response cache, the local model pool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_response_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own response cache, so cached replies never hide behaviour."""
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path_factory.mktemp("response-cache")))


@pytest.fixture(scope="session")
def local_pool():
    """The embedded default pool (SmolLM2-135M in-process); loaded once for the whole suite."""
    from atlas_router.pool.pool import Pool

    os.environ.setdefault("ATLAS_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "atlas-test-cache"))
    pool = Pool.load(None, use_cache=False)
    return pool
