"""Shared fixtures. Real captures come from ../shared/data (or $NETDIFFUSION_SHARED_DATA).

Tests that need the shared data fail (not skip) when it is missing: a skipped suite must never
count as a pass in CI, where the data is always present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("NETDIFFUSION_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not (path / "manifest.csv").exists():
        pytest.fail(f"shared sample data not found at {path} (set NETDIFFUSION_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real captures: manifest.csv, pcaps/<label>/, reference/."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
