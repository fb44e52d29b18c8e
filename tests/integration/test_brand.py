"""Brand images: valid RGBA PNGs of the sizes Home Assistant's brand rules ask for.

Rules (home-assistant/brands): PNG, transparent background, trimmed; icon square,
256x256 and 512x512 (@2x); logo with its shortest side 128 to 256 (@2x: 256 to 512),
the @2x images exactly twice their 1x one; the dark_* variants (for dark themes) the
same sizes as the others. The images are drawn by
``scripts/make_brand.py``; the last test checks the committed ones are its output.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BRAND = ROOT / "custom_components" / "ha_ingestor" / "brand"
SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Image:
    width: int
    height: int
    pixels: list[bytes]  # rows of RGBA bytes

    def alpha(self, x: int, y: int) -> int:
        return self.pixels[y][4 * x + 3]

    def opaque_box(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 (inclusive) of the pixels that are not fully transparent."""
        alphas = [row[3::4] for row in self.pixels]
        ys = [y for y, alpha in enumerate(alphas) if alpha.strip(b"\0")]
        x0 = min(len(alpha) - len(alpha.lstrip(b"\0")) for alpha in alphas if alpha.strip(b"\0"))
        x1 = max(len(alpha.rstrip(b"\0")) - 1 for alpha in alphas)
        return x0, min(ys), x1, max(ys)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(data: bytes) -> Image:
    """Parse an 8-bit RGBA, non-interlaced PNG strictly (every chunk's CRC checked)."""
    assert data.startswith(SIGNATURE), "not a PNG"
    offset = len(SIGNATURE)
    chunks: list[tuple[bytes, bytes]] = []
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack_from(">I", data, offset + 8 + length)
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1][0] == b"IEND"
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color_type, interlace) == (8, 6, 0), "expected 8-bit RGBA, not interlaced"
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = 4 * width
    assert len(raw) == height * (stride + 1)
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        filter_type = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        assert filter_type <= 4, f"unknown filter {filter_type}"
        for i in range(stride if filter_type else 0):  # filter 0 (none) leaves the row as is
            left = line[i - 4] if i >= 4 else 0
            up = previous[i]
            corner = previous[i - 4] if i >= 4 else 0
            predictor = (0, left, up, (left + up) // 2, _paeth(left, up, corner))[filter_type]
            line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(line))
        previous = line
    return Image(width, height, rows)


NAMES = [
    f"{prefix}{name}"
    for prefix in ("", "dark_")
    for name in ("icon.png", "icon@2x.png", "logo.png", "logo@2x.png")
]


@pytest.fixture(scope="module")
def images() -> dict[str, Image]:
    return {name: read_png((BRAND / name).read_bytes()) for name in NAMES}


def test_sizes(images: dict[str, Image]) -> None:
    assert (images["icon.png"].width, images["icon.png"].height) == (256, 256)
    assert (images["icon@2x.png"].width, images["icon@2x.png"].height) == (512, 512)
    logo, logo2x = images["logo.png"], images["logo@2x.png"]
    assert 128 <= min(logo.width, logo.height) <= 256
    assert (logo2x.width, logo2x.height) == (2 * logo.width, 2 * logo.height)
    for name in NAMES:
        if name.startswith("dark_"):
            dark, light = images[name], images[name.removeprefix("dark_")]
            assert (dark.width, dark.height) == (light.width, light.height)
            assert dark.pixels != light.pixels


@pytest.mark.parametrize("name", NAMES)
def test_transparent_and_trimmed(images: dict[str, Image], name: str) -> None:
    image = images[name]
    alphas = [row[3::4] for row in image.pixels]
    # A transparent background (not a filled square), with a solid mark on it.
    transparent = sum(a.count(0) for a in alphas)
    opaque = sum(a.count(255) for a in alphas)
    assert transparent > image.width * image.height // 10
    assert opaque > image.width * image.height // 10
    # Trimmed: the mark reaches both edges of one axis and is centred on the other.
    x0, y0, x1, y1 = image.opaque_box()
    spans_x = x0 == 0 and x1 == image.width - 1
    spans_y = y0 == 0 and y1 == image.height - 1
    assert spans_x or spans_y, (x0, y0, x1, y1)
    assert abs(x0 - (image.width - 1 - x1)) <= 2
    assert abs(y0 - (image.height - 1 - y1)) <= 2


def test_images_are_the_generators_output() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_brand.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
