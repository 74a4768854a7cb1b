"""The shard writer's files read back exactly, with pyarrow and with DuckDB (an independent reader)."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

import netdiffusion.parquet_writer as writer
from netdiffusion.dataset import META_COLUMNS, Packets, nprint_type, read_packets, write_shard


def _packets(n: int, width: int, seed: int = 0) -> Packets:
    rng = np.random.default_rng(seed)
    matrix = rng.integers(-1, 2, (n, width)).astype(np.int8)
    matrix[:, width // 2:] = np.where(rng.random((n, width - width // 2)) < 0.8, -1, matrix[:, width // 2:])
    return Packets(
        flow_id=np.array([f"flow-{i % 7}-é" for i in range(n)], dtype=object),
        label=np.array(["netflix" if i % 3 else "zoom" for i in range(n)], dtype=object),
        macro=np.full(n, "", dtype=object),
        packet_index=rng.integers(0, 1024, n).astype(np.int32),
        timestamp=rng.integers(-(2**40), 2**62, n).astype(np.int64),
        direction=rng.integers(0, 2, n).astype(np.int8),
        wire_length=rng.integers(0, 2**31 - 1, n).astype(np.int32),
        source=np.array([f"pcaps/{i % 2}.pcap" for i in range(n)], dtype=object),
        frame=rng.integers(0, 2**40, n).astype(np.int64),
        nprint=matrix,
    )


def _same(a: Packets, b: Packets) -> None:
    for key in (*META_COLUMNS, "nprint"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key


@pytest.mark.parametrize("n, width, page_values", [(1, 1408, 1 << 20), (4123, 1408, 1 << 20),
                                                   (3000, 1408, 5000), (257, 13, 64), (9, 1, 1 << 20)])
def test_round_trip_pyarrow_and_duckdb(tmp_path, monkeypatch, n, width, page_values):
    monkeypatch.setattr(writer, "PAGE_VALUES", page_values)  # several pages, ragged last page
    packets = _packets(n, width)
    path = tmp_path / "part.parquet"
    write_shard(packets, path)
    meta = pq.read_metadata(path)
    assert meta.created_by == writer.CREATED_BY.decode()  # the fast writer wrote it, not the fallback
    table = pq.read_table(path)
    assert table.schema.field("nprint").type == nprint_type(width)
    _same(Packets.from_table(table), packets)

    got = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchnumpy()
    for key in META_COLUMNS:
        assert np.array_equal(np.asarray(got[key]).astype(getattr(packets, key).dtype), getattr(packets, key)), key
    rows = np.array([list(r) for r in got["nprint"]], dtype=np.int8)
    assert np.array_equal(rows, packets.nprint)
    # statistics are right: DuckDB and pyarrow prune row groups by them
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}') WHERE label = 'zoom'").fetchall()[0][0] == \
        int((packets.label == "zoom").sum())
    assert len(read_packets(tmp_path, labels=["nope"])) == 0


def test_bytes_identical_to_pyarrow_reading(tmp_path):
    """Same table as pyarrow's own writer would give (types, values, schema metadata)."""
    packets = _packets(500, 1408, seed=3)
    write_shard(packets, tmp_path / "fast.parquet")
    fast = pq.read_table(tmp_path / "fast.parquet")
    pq.write_table(packets.to_table(), tmp_path / "ref.parquet")
    ref = pq.read_table(tmp_path / "ref.parquet")
    assert fast.schema.equals(ref.schema, check_metadata=True)
    assert fast.equals(ref)
    assert pq.ParquetFile(tmp_path / "fast.parquet").schema.equals(pq.ParquetFile(tmp_path / "ref.parquet").schema)


@pytest.mark.parametrize("case", ["empty", "out_of_range", "null_label"])
def test_falls_back_to_pyarrow_without_loss(tmp_path, case):
    packets = _packets(0 if case == "empty" else 40, 64)
    if case == "out_of_range":
        packets.nprint[3, 5] = 2  # not an nPrint value, but stored as given
    if case == "null_label":
        packets.label[0] = None
    write_shard(packets, tmp_path / "part.parquet")
    assert "parquet-cpp-arrow" in pq.read_metadata(tmp_path / "part.parquet").created_by
    back = Packets.from_table(pq.read_table(tmp_path / "part.parquet"))
    assert np.array_equal(back.nprint, packets.nprint)
    assert list(back.label) == list(packets.label)
