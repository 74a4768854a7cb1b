"""The shard writer's files read back exactly, with pyarrow and with DuckDB (an independent reader)."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

import netdiffusion.shard_parquet as writer
from netdiffusion.dataset import META_COLUMNS, Packets, nprint_type, read_packets, read_shard, write_shard


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
    assert np.array_equal(writer.read_nprint(path.read_bytes()), packets.nprint)  # the direct page reader
    _same(read_shard(path), packets)
    zoom = packets.label == "zoom"
    _same(read_shard(path, labels=["zoom"]), packets.take(zoom))

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
    assert writer.read_nprint((tmp_path / "part.parquet").read_bytes()) is None  # not ours: pyarrow reads it
    if case == "out_of_range":  # stored as given, and read back as an error naming the file, not as a bit
        with pytest.raises(ValueError, match=r"part\.parquet: nprint values must be 1 / 0 / -1: 1 are not "
                                             r"\(the first, 2, at row 3, column 5\)"):
            read_shard(tmp_path / "part.parquet")
        assert pq.read_table(tmp_path / "part.parquet")["nprint"][3].as_py()[5] == 2
        return
    if case != "null_label":
        _same(read_shard(tmp_path / "part.parquet"), packets)
    back = Packets.from_table(pq.read_table(tmp_path / "part.parquet"))
    assert np.array_equal(back.nprint, packets.nprint)
    assert list(back.label) == list(packets.label)


def test_page_reader_declines_what_it_did_not_write(tmp_path):
    packets = _packets(50, 1408, seed=9)
    write_shard(packets, tmp_path / "binary.parquet", storage="binary")
    assert writer.read_nprint((tmp_path / "binary.parquet").read_bytes()) is None
    _same(read_shard(tmp_path / "binary.parquet"), packets)
    write_shard(packets, tmp_path / "ours.parquet")
    data = bytearray((tmp_path / "ours.parquet").read_bytes())
    for at, patch in ((-8, b"\xff\xff\xff\x7f"), (-8, b"\x40\x00\x00\x00"), (-40, b"\xff" * 8)):
        damaged = bytearray(data)
        damaged[at:at + len(patch)] = patch  # footer length or content broken: not readable as ours
        (tmp_path / "damaged.parquet").write_bytes(bytes(damaged))
        assert writer.read_nprint((tmp_path / "damaged.parquet").read_bytes()) is None
    (tmp_path / "tiny.parquet").write_bytes(b"PAR1")
    assert writer.read_nprint((tmp_path / "tiny.parquet").read_bytes()) is None


def test_ternary_rows_and_dictionary_columns_write_the_same_file_content(tmp_path):
    """The encoder's path (packed rows, strings as dictionaries) reads back like write_shard's."""
    from netdiffusion.dataset import write_ternary_shard
    from netdiffusion.fields import pack_ternary

    packets = _packets(300, 1408, seed=4)
    names = sorted(set(packets.flow_id))
    columns = {k: getattr(packets, k) for k in META_COLUMNS}
    columns["flow_id"] = writer.DictionaryColumn(np.array([names.index(f) for f in packets.flow_id]), names)
    columns["macro"] = writer.DictionaryColumn(np.zeros(300, dtype=np.int32), [""])
    ternary = pack_ternary(packets.nprint.reshape(-1)).reshape(300, 1408 // 4)
    write_ternary_shard(columns, ternary, 1408, tmp_path / "ternary.parquet")
    assert pq.read_metadata(tmp_path / "ternary.parquet").created_by == writer.CREATED_BY.decode()
    _same(read_shard(tmp_path / "ternary.parquet"), packets)
    _same(Packets.from_table(pq.read_table(tmp_path / "ternary.parquet")), packets)
    # a null among the dictionary values: pyarrow's writer, nothing lost
    columns["macro"] = writer.DictionaryColumn(np.zeros(300, dtype=np.int32), [None])
    write_ternary_shard(columns, ternary, 1408, tmp_path / "null.parquet")
    back = pq.read_table(tmp_path / "null.parquet")
    assert back.column("macro").null_count == 300
    assert np.array_equal(Packets.from_table(back).nprint, packets.nprint)
