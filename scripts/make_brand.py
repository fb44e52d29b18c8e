#!/usr/bin/env python3
"""Draw HA Ingestor's brand images: custom_components/ha_ingestor/brand/*.png.

The mark: a stream of events (dots growing into an arrow) flowing into a database
cylinder, in Home Assistant blue (#03A9F4) and a dark slate (#1E2A38). The icon is
square, the stream falling into the cylinder's top; the logo is landscape, the stream
entering from the left. Home Assistant's brand rules: PNG, transparent background,
trimmed (the mark touches the image's edges on its longer axis and is centred on the
other), icon 256x256 and 512x512 (@2x), logo with its shortest side 256 (@2x: 512).
The dark_* variants, for dark themes, draw the cylinder light instead of dark.

Plain Python (zlib and struct), no image library, and deterministic: the same script
writes the same bytes, so ``scripts/make_brand.py --check`` can tell whether the
committed images are current. Shapes are signed distance functions, anti-aliased by
their distance to the pixel centre.

    scripts/make_brand.py            write the images
    scripts/make_brand.py --check    exit 1 if a committed image differs
"""

from __future__ import annotations

import itertools
import math
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

BRAND_DIR = Path(__file__).resolve().parent.parent / "custom_components" / "ha_ingestor" / "brand"

Rgb = tuple[int, int, int]
BLUE: Rgb = (0x03, 0xA9, 0xF4)  # Home Assistant blue
DARK: Rgb = (0x1E, 0x2A, 0x38)


@dataclass(frozen=True, slots=True)
class Cylinder:
    """The cylinder's colours: body, segment lines, lid."""

    body: Rgb
    band: Rgb
    lid: Rgb


ON_LIGHT = Cylinder(body=DARK, band=(0x3B, 0x50, 0x66), lid=(0x2B, 0x3B, 0x4E))
# The dark_* images, for Home Assistant's dark theme: a light cylinder.
ON_DARK = Cylinder(body=(0xDD, 0xE4, 0xEA), band=(0xA9, 0xB7, 0xC3), lid=(0xF4, 0xF7, 0xF9))

Sdf = Callable[[float, float], float]


@dataclass(frozen=True, slots=True)
class Shape:
    """A signed distance function (negative inside) with its bounding box."""

    sdf: Sdf
    box: tuple[float, float, float, float]  # x0, y0, x1, y1


def circle(cx: float, cy: float, r: float) -> Shape:
    return Shape(lambda x, y: math.hypot(x - cx, y - cy) - r, (cx - r, cy - r, cx + r, cy + r))


def ellipse(cx: float, cy: float, rx: float, ry: float) -> Shape:
    def sdf(x: float, y: float) -> float:
        # First-order distance: the implicit function over its gradient's length.
        u, v = (x - cx) / rx, (y - cy) / ry
        k = math.hypot(u, v)
        grad = math.hypot(u / rx, v / ry)
        return (k - 1.0) * k / grad if grad > 1e-9 else -min(rx, ry)

    return Shape(sdf, (cx - rx, cy - ry, cx + rx, cy + ry))


def box(x0: float, y0: float, x1: float, y1: float) -> Shape:
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2

    def sdf(x: float, y: float) -> float:
        dx, dy = abs(x - cx) - hx, abs(y - cy) - hy
        outside = math.hypot(max(dx, 0.0), max(dy, 0.0))
        return outside + min(max(dx, dy), 0.0)

    return Shape(sdf, (x0, y0, x1, y1))


def capsule(ax: float, ay: float, bx: float, by: float, r: float) -> Shape:
    """A line from a to b, ``r`` wide on each side, with round ends."""
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy

    def sdf(x: float, y: float) -> float:
        t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / length2))
        return math.hypot(x - ax - t * dx, y - ay - t * dy) - r

    return Shape(sdf, (min(ax, bx) - r, min(ay, by) - r, max(ax, bx) + r, max(ay, by) + r))


def triangle(points: Sequence[tuple[float, float]]) -> Shape:
    """A triangle (any winding): the exact distance to its edges, negative inside."""
    (x0, y0), (x1, y1), (x2, y2) = points
    edges = ((x0, y0, x1, y1), (x1, y1, x2, y2), (x2, y2, x0, y0))
    sign = 1.0 if (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0) > 0 else -1.0

    def sdf(x: float, y: float) -> float:
        nearest = math.inf
        inside = True
        for ax, ay, bx, by in edges:
            ex, ey = bx - ax, by - ay
            t = max(0.0, min(1.0, ((x - ax) * ex + (y - ay) * ey) / (ex * ex + ey * ey)))
            nearest = min(nearest, math.hypot(x - ax - t * ex, y - ay - t * ey))
            if sign * (ex * (y - ay) - ey * (x - ax)) < 0:
                inside = False
        return -nearest if inside else nearest

    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return Shape(sdf, (min(xs), min(ys), max(xs), max(ys)))


def union(*shapes: Shape) -> Shape:
    return Shape(
        lambda x, y: min(shape.sdf(x, y) for shape in shapes),
        (
            min(s.box[0] for s in shapes),
            min(s.box[1] for s in shapes),
            max(s.box[2] for s in shapes),
            max(s.box[3] for s in shapes),
        ),
    )


def clip(shape: Shape, to: Shape) -> Shape:
    """The part of ``shape`` inside ``to``."""
    return Shape(lambda x, y: max(shape.sdf(x, y), to.sdf(x, y)), shape.box)


def ring(cx: float, cy: float, rx: float, ry: float, half_width: float) -> Shape:
    inner = ellipse(cx, cy, rx, ry)
    return Shape(lambda x, y: abs(inner.sdf(x, y)) - half_width, inner.box)


Layer = tuple[Shape, Rgb]


def cylinder(
    colors: Cylinder, cx: float, top: float, bottom: float, rx: float, ry: float
) -> list[Layer]:
    """A database cylinder: body, two segment lines, a lighter lid with a blue rim."""
    body = union(box(cx - rx, top, cx + rx, bottom), ellipse(cx, bottom, rx, ry))
    layers: list[Layer] = [(body, colors.body)]
    step = (bottom - top) / 3
    for level in (top + step, top + 2 * step):
        # The front half of an ellipse, as a thin band inside the body.
        band = clip(ring(cx, level, rx, ry, 0.012), box(cx - rx, level, cx + rx, level + ry + 0.02))
        layers.append((clip(band, body), colors.band))
    layers.append((ellipse(cx, top, rx, ry), colors.lid))
    layers.append((ring(cx, top, rx - 0.012, ry - 0.012, 0.012), BLUE))
    return layers


def stream(ax: float, ay: float, bx: float, by: float, *, width: float) -> list[Layer]:
    """Events flowing from a to b: three growing dots, then an arrow whose tip is b."""
    length = math.hypot(bx - ax, by - ay)
    ux, uy = (bx - ax) / length, (by - ay) / length  # along the stream
    nx, ny = -uy, ux  # across it

    def at(distance: float) -> tuple[float, float]:
        return ax + ux * distance, ay + uy * distance

    layers: list[Layer] = []
    radii = (0.45 * width, 0.6 * width, 0.75 * width)
    distance = radii[0]
    for radius in radii:
        layers.append((circle(*at(distance), radius), BLUE))
        distance += 2 * radius + 0.55 * width
    head = 2.4 * width
    shaft_end = length - head * 0.8
    layers.append((capsule(*at(distance + width * 0.4), *at(shaft_end), width * 0.75), BLUE))
    bx0, by0 = at(length - head)
    half = 1.7 * width
    corners = ((bx0 + nx * half, by0 + ny * half), (bx0 - nx * half, by0 - ny * half))
    layers.append((triangle(((bx, by), *corners)), BLUE))
    return layers


def icon_layers(colors: Cylinder) -> list[Layer]:
    # The stream falls diagonally towards the middle of the lid, its tip just above it.
    return [
        *stream(-0.12, -0.085, 0.55, 0.39, width=0.072),
        *cylinder(colors, 0.70, 0.50, 0.92, 0.30, 0.10),
    ]


def logo_layers(colors: Cylinder) -> list[Layer]:
    # The stream enters horizontally; the cylinder stands at the right.
    return [
        *stream(0.0, 0.50, 0.92, 0.50, width=0.095),
        *cylinder(colors, 1.34, 0.22, 0.70, 0.32, 0.11),
    ]


def render(layers: list[Layer], width: int, height: int) -> bytes:
    """Raw RGBA rows of the layers, fitted to the image: trimmed and centred."""
    x0 = min(shape.box[0] for shape, _ in layers)
    y0 = min(shape.box[1] for shape, _ in layers)
    x1 = max(shape.box[2] for shape, _ in layers)
    y1 = max(shape.box[3] for shape, _ in layers)
    scale = min(width / (x1 - x0), height / (y1 - y0))  # pixels per design unit
    off_x = (width - (x1 - x0) * scale) / 2 - x0 * scale
    off_y = (height - (y1 - y0) * scale) / 2 - y0 * scale
    pixel = 1.0 / scale
    rows = bytearray()
    spans = [
        (
            shape,
            color,
            math.floor(shape.box[0] * scale + off_x) - 1,
            math.ceil(shape.box[2] * scale + off_x) + 1,
            math.floor(shape.box[1] * scale + off_y) - 1,
            math.ceil(shape.box[3] * scale + off_y) + 1,
        )
        for shape, color in layers
    ]
    for py in range(height):
        rows.append(0)  # filter: none
        y = (py + 0.5 - off_y) * pixel
        active = [span for span in spans if span[4] <= py <= span[5]]
        for px in range(width):
            x = (px + 0.5 - off_x) * pixel
            r = g = b = a = 0.0  # premultiplied
            for shape, color, left, right, _, _ in active:
                if not left <= px <= right:
                    continue
                coverage = 0.5 - shape.sdf(x, y) / pixel
                if coverage <= 0.0:
                    continue
                coverage = min(coverage, 1.0)
                keep = 1.0 - coverage
                r = color[0] * coverage + r * keep
                g = color[1] * coverage + g * keep
                b = color[2] * coverage + b * keep
                a = coverage + a * keep
            if a <= 0.0:
                rows += b"\0\0\0\0"
            else:
                rows += bytes((round(r / a), round(g / a), round(b / a), round(a * 255)))
    return bytes(rows)


def png(width: int, height: int, raw_rows: bytes) -> bytes:
    """An 8-bit RGBA PNG of already filtered rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw_rows, 9))
        + chunk(b"IEND", b"")
    )


# name -> (layers, width, height)
IMAGES: dict[str, tuple[Callable[[Cylinder], list[Layer]], int, int]] = {
    "icon.png": (icon_layers, 256, 256),
    "icon@2x.png": (icon_layers, 512, 512),
    "logo.png": (logo_layers, 512, 256),
    "logo@2x.png": (logo_layers, 1024, 512),
}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for (base_name, (layers, width, height)), (prefix, colors) in itertools.product(
        IMAGES.items(), (("", ON_LIGHT), ("dark_", ON_DARK))
    ):
        data = png(width, height, render(layers(colors), width, height))
        name = prefix + base_name
        path = BRAND_DIR / name
        if check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path} ({width}x{height}, {len(data)} bytes)")
    if stale:
        print(f"out of date: {', '.join(stale)} (run scripts/make_brand.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
