"""nPrint matrix <-> RGB image codec, colour correction and control images.

The paper draws a flow's nPrint matrix as an image (one packet per row, one header bit per
column, three colours for set / unset / absent) so that an image diffusion model can learn it.
This module is the exact, vectorized bridge both ways, plus the two conditioning images the
paper's ControlNet step uses: a canny edge map and the exact field-presence mask of a real flow.
Every column position comes from :class:`netdiffusion.fields.Layout`; nothing is hard-coded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from netdiffusion.fields import ABSENT, Layout

PAPER_ROWS = 1024
"""The paper's image height: 1,024 packets per flow."""

# value -> RGB. "paper": green set, red unset, grey absent (NetDiffusion figures);
# "sd3": red 1, green 0, blue -1 (the NetDiffusion SD3 code).
PALETTES: dict[str, dict[int, tuple[int, int, int]]] = {
    "paper": {1: (0, 255, 0), 0: (255, 0, 0), ABSENT: (128, 128, 128)},
    "sd3": {1: (255, 0, 0), 0: (0, 255, 0), ABSENT: (0, 0, 255)},
}
_VALUES = (1, 0, ABSENT)


def palette_array(palette: str | Mapping[int, Sequence[int]] = "paper") -> np.ndarray:
    """``(3, 3)`` uint8 colours for the values ``(1, 0, -1)`` in that order."""
    table = PALETTES[palette] if isinstance(palette, str) else palette
    try:
        colours = np.array([table[v] for v in _VALUES], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"palette must map 1, 0 and -1 to colours; missing {exc}") from None
    if colours.shape != (3, 3) or (colours < 0).any() or (colours > 255).any():
        raise ValueError("palette colours must be three RGB triples in 0..255")
    if len({tuple(c) for c in colours}) != 3:
        raise ValueError("palette colours must be distinct")
    return colours.astype(np.uint8)


def select_columns(layout: Layout, *, headers: Iterable[str] | None = None,
                   drop_fields: Iterable[str] = ()) -> np.ndarray:
    """Column indices of a subset of the layout (e.g. drop addresses as the SD3 code does)."""
    keep = np.zeros(layout.width, dtype=bool)
    for h in headers if headers is not None else layout.headers:
        keep[layout.header_slice(h)] = True
    for key in drop_fields:
        keep[layout.field_slice(key)] = False
    return np.flatnonzero(keep)


def expand_columns(sub: np.ndarray, columns: np.ndarray, width: int) -> np.ndarray:
    """Put a column subset back at its positions in a full-width matrix (others absent)."""
    out = np.full((sub.shape[0], width), ABSENT, dtype=np.int8)
    out[:, columns] = sub
    return out


def matrix_to_image(matrix: np.ndarray, *, palette: str | Mapping[int, Sequence[int]] = "paper",
                    rows: int | None = PAPER_ROWS, columns: np.ndarray | None = None) -> np.ndarray:
    """``(rows, cols, 3)`` uint8 image of a ``(packets, width)`` matrix of 1 / 0 / -1.

    Flows shorter than ``rows`` are padded with absent rows (the paper's fixed 1,024 rows);
    longer ones are cut. ``rows=None`` keeps the flow's own length."""
    m = np.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D nPrint matrix, got shape {m.shape}")
    if columns is not None:
        m = m[:, columns]
    if rows is not None:
        if m.shape[0] >= rows:
            m = m[:rows]
        else:
            m = np.concatenate([m, np.full((rows - m.shape[0], m.shape[1]), ABSENT, dtype=m.dtype)])
    bad = ~np.isin(m, _VALUES)
    if bad.any():
        raise ValueError(f"matrix holds values other than 1/0/-1 (e.g. {m[bad][0]})")
    # value v -> palette row: 1 -> 0, 0 -> 1, -1 -> 2
    index = np.where(m == 1, 0, np.where(m == 0, 1, 2))
    return palette_array(palette)[index]


def color_correct(image: np.ndarray, *, palette: str | Mapping[int, Sequence[int]] = "paper"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Snap every pixel to the nearest palette colour.

    Returns ``(matrix, confidence)``: int8 values 1 / 0 / -1 and a float32 confidence in
    [0, 1] per pixel, ``(d2 - d1) / (d2 + d1)`` from the distances to the nearest and the
    second-nearest colour (1 = exactly a palette colour, 0 = halfway between two). Repair uses
    the confidence to decide which bits to trust."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    pixels = img[..., :3].astype(np.float32)
    colours = palette_array(palette).astype(np.float32)
    # (H, W, 3 colours) squared distances; numpy broadcasting, no per-pixel loop
    dist = np.sqrt(((pixels[..., None, :] - colours[None, None, :, :]) ** 2).sum(axis=-1))
    order = np.argsort(dist, axis=-1)
    nearest = order[..., 0]
    d1 = np.take_along_axis(dist, order[..., :1], axis=-1)[..., 0]
    d2 = np.take_along_axis(dist, order[..., 1:2], axis=-1)[..., 0]
    confidence = np.where(d1 + d2 > 0, (d2 - d1) / np.maximum(d1 + d2, 1e-6), 1.0).astype(np.float32)
    values = np.array(_VALUES, dtype=np.int8)[nearest]
    return values, confidence


def image_to_matrix(image: np.ndarray, *, palette: str | Mapping[int, Sequence[int]] = "paper",
                    packets: int | None = None, columns: np.ndarray | None = None,
                    width: int | None = None, trim: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`matrix_to_image` (with colour correction for noisy images).

    ``packets`` keeps that many rows; ``trim`` drops trailing all-absent (padding) rows; with
    ``columns`` (and the full ``width``) the subset is put back in a full-width matrix."""
    matrix, confidence = color_correct(image, palette=palette)
    if columns is not None:
        full = width if width is not None else int(np.max(columns)) + 1
        matrix = expand_columns(matrix, columns, full)
        conf = np.ones((confidence.shape[0], full), dtype=np.float32)
        conf[:, columns] = confidence
        confidence = conf
    if packets is not None:
        matrix, confidence = matrix[:packets], confidence[:packets]
    elif trim:
        present_rows = np.flatnonzero((matrix != ABSENT).any(axis=1))
        n = int(present_rows[-1]) + 1 if present_rows.size else 0
        matrix, confidence = matrix[:n], confidence[:n]
    return matrix, confidence


# -- control images ------------------------------------------------------------------------------

def presence_mask(matrix: np.ndarray, rows: int | None = None) -> np.ndarray:
    """Exact bit-level field-presence mask of a flow: True where a header bit exists.

    nPrint marks every bit of a missing header (and option bytes past the header's length)
    absent, so this mask says which headers, and how much of each options field, each packet
    carries: the structure the paper's ControlNet recovers from edges, taken exactly."""
    mask = np.asarray(matrix) != ABSENT
    if rows is not None:
        if mask.shape[0] >= rows:
            mask = mask[:rows]
        else:
            mask = np.concatenate([mask, np.zeros((rows - mask.shape[0], mask.shape[1]), dtype=bool)])
    return mask


def header_lengths(matrix: np.ndarray, layout: Layout) -> np.ndarray:
    """``(packets, headers)`` int16: present bits of each header, a compact form of the mask.

    nPrint's absence inside a header is always a suffix (missing header, or option bytes past
    the header length), so the count of present bits per header reproduces the mask exactly
    (:func:`mask_from_lengths`). Models store templates in this form (10 bytes per packet)."""
    m = np.asarray(matrix)
    out = np.zeros((m.shape[0], len(layout.headers)), dtype=np.int16)
    for i, h in enumerate(layout.headers):
        out[:, i] = (m[:, layout.header_slice(h)] != ABSENT).sum(axis=1)
    return out


def mask_from_lengths(lengths: np.ndarray, layout: Layout) -> np.ndarray:
    """Bit-level presence mask from :func:`header_lengths` (the inverse for nPrint data)."""
    lengths = np.asarray(lengths)
    mask = np.zeros((lengths.shape[0], layout.width), dtype=bool)
    for i, h in enumerate(layout.headers):
        s = layout.header_slice(h)
        bit = np.arange(s.stop - s.start)
        mask[:, s] = bit[None, :] < lengths[:, i : i + 1]
    return mask


def mask_image(mask: np.ndarray) -> np.ndarray:
    """A presence mask as an RGB control image (white = present, black = absent)."""
    grey = np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def canny_edges(image: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny edge map (opencv) of a flow image as an RGB control image, as in the paper."""
    import cv2  # local import: keeps `netdiffusion --help` fast

    img = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., :3])
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, low, high)
    return np.repeat(edges[..., None], 3, axis=2)


def control_image(matrix: np.ndarray, kind: str = "canny", *, palette: str = "paper",
                  rows: int | None = PAPER_ROWS, columns: np.ndarray | None = None) -> np.ndarray:
    """The control image of a real template flow: ``canny`` edges or the presence ``mask``."""
    m = np.asarray(matrix)
    if columns is not None:
        m = m[:, columns]
    if kind == "canny":
        return canny_edges(matrix_to_image(m, palette=palette, rows=rows))
    if kind == "mask":
        return mask_image(presence_mask(m, rows=rows))
    raise ValueError(f"unknown control image kind {kind!r} (canny, mask)")


def save_png(path, image: np.ndarray) -> None:
    """Write an RGB image as PNG atomically (opencv wants BGR)."""
    import cv2

    from netdiffusion.dataset import atomic_write_bytes

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image)[..., ::-1]))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def load_png(path) -> np.ndarray:
    """Read a PNG as RGB uint8."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"{path}: not a readable image")
    return img[..., ::-1].copy()
