"""Shared fixtures. Real captures come from ../shared/data (or $NETDIFFUSION_SHARED_DATA).

Tests that need the shared data fail (not skip) when it is missing: a skipped suite must never
count as a pass in CI, where the data is always present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.services import mlflow_server, s3_server  # noqa: F401  (real S3 + MLflow fixtures)

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


# Real captures behind ``small_dataset``: IPv4 TCP+UDP (zoom, whatsapp), IPv6 TCP (reddit),
# IPv4 TCP with ICMP (instagram), HTTP/TLS (netflix). 5 classes, 28-61 flows each.
SMALL_DATASET_CAPTURES = (
    "pcaps/zoom/zoom.pcap",
    "pcaps/whatsapp/wa_voice.pcap",
    "pcaps/reddit/reddit.pcap",
    "pcaps/instagram/instagram.pcap",
    "pcaps/netflix/netflix.pcap",
)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A small encoded dataset of real traffic (64 packets per flow; about a second to build).

    Labels come from the shared manifest; returns the dataset directory."""
    from netdiffusion.encode import encode_paths

    out = tmp_path_factory.mktemp("small_dataset")
    summary = encode_paths([shared_data / p for p in SMALL_DATASET_CAPTURES], out,
                           manifest=shared_data / "manifest.csv", packets=64, progress=False)
    assert summary["files_read"] == len(SMALL_DATASET_CAPTURES), summary["files_rejected"]
    return out


@pytest.fixture(scope="session")
def shared_encoded(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Every shared capture encoded with every packet kept (``windows=True``), for the round-trip
    and tshark-agreement tests (~10-20 s on 2 cores; used by slow tests only)."""
    from netdiffusion.encode import encode_paths

    out = tmp_path_factory.mktemp("shared_encoded")
    summary = encode_paths([shared_data / "pcaps"], out, manifest=shared_data / "manifest.csv", windows=True,
                           workers=2, progress=False)
    assert not summary["files_rejected"], summary["files_rejected"]
    return out


@pytest.fixture(scope="session")
def tiny_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained ``tiny`` native model directory (a few steps; seconds on one core).

    Trained on ``small_dataset`` (real captures) when that fixture exists, else on a synthetic
    dataset built from the field table."""
    from netdiffusion.model.train import train

    try:
        data = request.getfixturevalue("small_dataset")
    except pytest.FixtureLookupError:
        from netdiffusion.model.testing import write_synthetic_dataset

        data = write_synthetic_dataset(tmp_path_factory.mktemp("tiny_model_data"))
    out = tmp_path_factory.mktemp("tiny_model") / "model"
    train(data, out, backend="native", config="tiny", seed=0)
    return out
