"""The nPrint field table: nPrint's names, widths and bit order; bits <-> bytes conversions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netdiffusion.fields import ABSENT, DEFAULT_LAYOUT, HEADERS, Layout


def test_widths_and_names_are_nprints() -> None:
    assert {h: HEADERS[h].bits for h in HEADERS} == {"ipv4": 480, "ipv6": 320, "tcp": 480, "udp": 64, "icmp": 64}
    assert DEFAULT_LAYOUT.width == 1408 == len(DEFAULT_LAYOUT.columns)
    cols = DEFAULT_LAYOUT.columns
    assert cols[0] == "ipv4_ver_0" and cols[-1] == "icmp_roh_31"
    for name in ("tcp_opt_319", "udp_cksum_15", "ipv6_src_127", "ipv4_opt_0", "tcp_ackf_0"):
        assert name in cols
    assert HEADERS["ipv4"].min_bits == 160 and HEADERS["tcp"].min_bits == 160


def test_columns_match_the_original_netdiffusion_file(shared_data: Path) -> None:
    header = (shared_data / "reference/netflix_01_real_finetune.nprint").open().readline().strip().split(",")
    assert header[0] == "src_ip" and header[1:] == DEFAULT_LAYOUT.columns


def test_layout_subsets_keep_nprint_order() -> None:
    layout = Layout(["udp", "ipv4"])
    assert layout.headers == ("ipv4", "udp") and layout.width == 544
    assert Layout.from_columns(layout.columns).columns == layout.columns
    with pytest.raises(ValueError):
        Layout(["ipv4", "quic"])
    with pytest.raises(ValueError):
        Layout.from_columns(list(reversed(layout.columns)))


def test_bits_bytes_round_trip_and_bit_order() -> None:
    rng = np.random.default_rng(0)
    layout = DEFAULT_LAYOUT
    for h in layout.headers:
        size = HEADERS[h].bytes
        data = rng.integers(0, 256, size=(200, size), dtype=np.uint8)
        lengths = rng.integers(HEADERS[h].min_bits // 8, size + 1, size=200)
        lengths[:5] = 0
        bits = layout.header_bits_from_bytes(h, data, lengths)
        assert bits.dtype == np.int8 and bits.shape == (200, HEADERS[h].bits)
        for r in range(200):
            n = int(lengths[r])
            assert (bits[r, n * 8:] == ABSENT).all()
            assert np.array_equal(bits[r, : n * 8], np.unpackbits(data[r, :n]).astype(np.int8))
        matrix = layout.empty(200)
        matrix[:, layout.header_slice(h)] = bits
        back, back_len = layout.header_bytes(matrix, h)
        assert np.array_equal(back_len, lengths)
        for r in range(200):
            assert back[r, : lengths[r]].tobytes() == data[r, : lengths[r]].tobytes()
    # most significant bit first: ttl 64 = 0b01000000
    m = layout.empty(1)
    layout.set_field(m, "ipv4_ttl", 64)
    assert m[0, layout.field_slice("ipv4_ttl")].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert layout.field_values(m, "ipv4_ttl").tolist() == [64]
    assert layout.field_values(m, "ipv4_tl").tolist() == [-1]
    assert not layout.header_present(m, "tcp")[0]
