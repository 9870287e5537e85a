"""A synthetic traffic-sign set (``stn-gluon make-dataset signs DIR``): 43 signs photographed on cluttered scenes.

No photo dataset can be downloaded where this project is tested, so this stands in for GTSRB: 43 classes,
each a distinct sign drawn with PIL from a shape (circle, triangle up or down, octagon, diamond, square,
rectangle), a colour scheme (red ring on white, blue disc, red-bordered triangle, yellow diamond, red
octagon, ...) and a pictogram (numbers, arrows, bars, crosses, dots, chevrons, figures); eight speed limits
differ only in their number, as GTSRB's do. Each sample puts the sign at a random scale (its width 35-80 %
of the frame's shorter side by default: ``sign_scale``), rotation (+-15 degrees by default: ``max_rotation``), mild perspective and
position on a photographic-looking background (sky and ground bands or gradients, blurred blobs, texture,
poles, other coloured shapes), then changes the lighting (brightness, contrast, gamma, colour cast, a shadow), blurs, adds noise and sometimes
JPEG artefacts. Image sides are 28-64 px by default (GTSRB's typical range), or fixed with ``size``.

Every image comes from its own generator, ``np.random.default_rng([seed, split, class, index])``, so the
same seed writes the same bytes whatever the number of worker processes. :func:`make_signs_dataset` writes
a ``folder:`` dataset, ``DIR/train/<NN_name>/NNNNN.png`` and ``DIR/test/...``, with ``names.txt`` (one class
name a line, line i = label i), ``dataset.json`` (how it was made) and, with ``rec``, im2rec's
``train.lst``/``train.rec``/``train.idx`` and ``test.*`` (``mx.recordio.pack_img`` as PNG, header label =
class index, paths relative to ``DIR/train`` and ``DIR/test``). NumPy and PIL only; MXNet loads for the
``.rec`` alone.
"""
import colorsys
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .._runtime.errors import ConfigError, StnGluonError
from .._runtime.files import current_umask, write_json
from .._runtime.flags import option, validate_fields
from .._runtime.paths import writable_dir

__all__ = ["SignClass", "SIGNS", "class_subset", "folder_name", "render_sign", "sign_image", "sign_pose", "SignPose",
           "parse_size", "parse_scale", "SignsConfig", "make_signs_dataset", "GENERATOR", "SPLITS"]

Colour = Tuple[int, int, int]
Point = Tuple[float, float]
#: The name ``dataset.json`` gives its maker: ``overwrite`` replaces only a folder that says so.
GENERATOR = "stn-gluon make-dataset signs"
FORMAT_VERSION = 1
SPLITS = ("train", "test")
_SPLIT_CODE = {"train": 0, "test": 1}
TEMPLATE_PX = 128  # the clean sign's side, before it is warped into a sample
_RENDER_PX = 256  # drawn at twice that, then reduced: smooth edges

RED, WHITE, BLUE, YELLOW = (200, 24, 32), (244, 244, 238), (22, 72, 168), (250, 196, 0)
BLACK, GREY, DARK, GREEN = (22, 22, 22), (128, 128, 128), (70, 70, 70), (0, 122, 64)

# --------------------------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class SignClass:
    """One sign: ``name`` (folder-safe), ``shape``, colour ``scheme`` and ``pictogram`` (``text:30``: a number)."""
    name: str
    shape: str
    scheme: str
    pictogram: str


def _catalogue() -> Tuple[SignClass, ...]:
    speeds = [SignClass(f"speed_{v}", "circle", "prohibitory", f"text:{v}") for v in (20, 30, 50, 60, 70, 80, 100, 120)]
    rows = [("no_overtaking", "circle", "prohibitory", "cars"), ("no_trucks", "circle", "prohibitory", "truck"),
            ("no_vehicles", "circle", "prohibitory", "none"), ("no_left_turn", "circle", "prohibitory", "no_left"),
            ("no_parking", "circle", "restricted", "slash"), ("no_stopping", "circle", "restricted", "cross_x"),
            ("end_speed_80", "circle", "end", "end_80"), ("end_all", "circle", "end", "end_bars"),
            ("no_entry", "circle", "no_entry", "bar"), ("stop", "octagon", "stop", "text:STOP"),
            ("yield", "triangle_down", "warning", "none"), ("priority_road", "diamond", "priority", "none"),
            ("end_priority", "diamond", "priority", "end_band"), ("caution", "triangle_up", "warning", "exclaim"),
            ("curve_left", "triangle_up", "warning", "curve_left"),
            ("curve_right", "triangle_up", "warning", "curve_right"),
            ("double_curve", "triangle_up", "warning", "double_curve"),
            ("bumpy_road", "triangle_up", "warning", "bumps"), ("slippery", "triangle_up", "warning", "waves"),
            ("road_narrows", "triangle_up", "warning", "narrows"),
            ("traffic_signals", "triangle_up", "warning", "signals"),
            ("pedestrians", "triangle_up", "warning", "walker"), ("crossroads", "triangle_up", "warning", "plus"),
            ("snow", "triangle_up", "warning", "snow"), ("ahead_only", "circle", "mandatory", "arrow_up"),
            ("turn_right", "circle", "mandatory", "turn_right"), ("turn_left", "circle", "mandatory", "turn_left"),
            ("ahead_or_right", "circle", "mandatory", "up_right"), ("ahead_or_left", "circle", "mandatory", "up_left"),
            ("keep_right", "circle", "mandatory", "keep_right"), ("keep_left", "circle", "mandatory", "keep_left"),
            ("roundabout", "circle", "mandatory", "roundabout"), ("parking", "square", "info_blue", "text:P"),
            ("hospital", "square", "info_green", "text:H"), ("chevrons", "rect", "chevron", "chevrons")]
    return tuple(speeds) + tuple(SignClass(*row) for row in rows)


#: The 43 signs; a class's label is its index here (or in :func:`class_subset`'s list).
SIGNS: Tuple[SignClass, ...] = _catalogue()


def class_subset(count: int) -> List[int]:
    """Indices into :data:`SIGNS` of ``count`` (2..43) classes spread over the catalogue (all 43: in order)."""
    if not 2 <= count <= len(SIGNS):
        raise ConfigError("classes", f"must be between 2 and {len(SIGNS)}, got {count}")
    return [(i * len(SIGNS)) // count for i in range(count)]


def folder_name(label: int, sign_index: int) -> str:
    """The class folder of label ``label``: ``"00_speed_20"`` (names sort in label order)."""
    return f"{label:02d}_{SIGNS[sign_index].name}"

# --------------------------------------------------------------------------------------------- drawing


class _Pen:
    """Draws in sign units: (0, 0) the sign's centre, +-1 its edges, y down; a box moves and scales them."""

    def __init__(self, draw: ImageDraw.ImageDraw, px: int, cx: float = 0.0, cy: float = 0.0, scale: float = 1.0):
        self.draw, self.px, self.cx, self.cy, self.scale = draw, px, cx, cy, scale

    def xy(self, p: Point) -> Point:
        return ((self.cx + p[0] * self.scale + 1) * self.px / 2, (self.cy + p[1] * self.scale + 1) * self.px / 2)

    def size(self, d: float) -> float:
        return d * self.scale * self.px / 2

    def polygon(self, points: Sequence[Point], colour: Colour) -> None:
        self.draw.polygon([self.xy(p) for p in points], fill=colour)

    def line(self, points: Sequence[Point], width: float, colour: Colour) -> None:
        """A polyline with round joins and round ends."""
        w = max(1, int(round(self.size(width))))
        self.draw.line([self.xy(p) for p in points], fill=colour, width=w, joint="curve")
        for p in (points[0], points[-1]):
            self.disc(p, width / 2, colour)

    def disc(self, p: Point, r: float, colour: Colour) -> None:
        (x, y), rr = self.xy(p), self.size(r)
        self.draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=colour)

    def ring(self, p: Point, r: float, width: float, colour: Colour) -> None:
        (x, y), rr = self.xy(p), self.size(r)
        self.draw.ellipse([x - rr, y - rr, x + rr, y + rr], outline=colour, width=max(1, int(self.size(width))))

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour) -> None:
        self.polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)

    def arrow(self, points: Sequence[Point], width: float, colour: Colour, head: float = 2.0) -> None:
        """A polyline ending in a triangular head ``head`` widths long at its last point."""
        (x0, y0), (x1, y1) = points[-2], points[-1]
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        dx, dy = (x1 - x0) / length, (y1 - y0) / length
        hl, hw = head * width, 0.85 * head * width
        bx, by = x1 - dx * hl, y1 - dy * hl
        self.line(list(points[:-1]) + [(bx + dx * 0.1 * hl, by + dy * 0.1 * hl)], width, colour)
        self.polygon([(x1, y1), (bx - dy * hw, by + dx * hw), (bx + dy * hw, by - dx * hw)], colour)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 14) -> List[Point]:
    """Points on an ellipse from angle ``a0`` to ``a1`` (degrees; y down, so 270 is the top)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(a0, a1, n)]


#: A stroke font: glyph -> (advance width, polylines) in a box of height 1, y down. Drawn, not read from a
#: font file, so every Pillow draws the same signs.
_GLYPHS: Dict[str, Tuple[float, List[List[Point]]]] = {
    "0": (0.6, [_arc(0.3, 0.5, 0.3, 0.5, 0, 360, 28)]),
    "1": (0.4, [[(0.05, 0.22), (0.3, 0.0), (0.3, 1.0)]]),
    "2": (0.6, [_arc(0.3, 0.28, 0.3, 0.28, 180, 400) + [(0.0, 1.0), (0.62, 1.0)]]),
    "3": (0.6, [_arc(0.3, 0.25, 0.27, 0.25, 200, 450), _arc(0.3, 0.74, 0.3, 0.26, 270, 520)]),
    "5": (0.6, [[(0.56, 0.0), (0.08, 0.0), (0.05, 0.45)] + _arc(0.3, 0.67, 0.3, 0.33, 230, 500)]),
    "6": (0.6, [_arc(0.3, 0.68, 0.3, 0.32, 0, 360, 24), [(0.5, 0.0), (0.04, 0.6)]]),
    "7": (0.6, [[(0.0, 0.0), (0.6, 0.0), (0.18, 1.0)]]),
    "8": (0.6, [_arc(0.3, 0.25, 0.25, 0.24, 0, 360, 22), _arc(0.3, 0.73, 0.3, 0.27, 0, 360, 24)]),
    "S": (0.6, [_arc(0.3, 0.25, 0.28, 0.25, 330, 90) + _arc(0.3, 0.75, 0.3, 0.25, 270, 510)]),
    "T": (0.6, [[(0.0, 0.0), (0.6, 0.0)], [(0.3, 0.0), (0.3, 1.0)]]),
    "O": (0.7, [_arc(0.35, 0.5, 0.35, 0.5, 0, 360, 28)]),
    "P": (0.55, [[(0.0, 1.0), (0.0, 0.0), (0.28, 0.0)] + _arc(0.28, 0.27, 0.27, 0.27, 270, 450) + [(0.0, 0.54)]]),
    "H": (0.6, [[(0.0, 0.0), (0.0, 1.0)], [(0.6, 0.0), (0.6, 1.0)], [(0.0, 0.5), (0.6, 0.5)]]),
}


def _text(pen: _Pen, text: str, colour: Colour, width: float = 1.7) -> None:
    """``text`` centred in the pictogram box, as wide as ``width`` (or 1.15 tall, whichever is smaller)."""
    gap = 0.2
    advance = sum(_GLYPHS[c][0] for c in text) + gap * (len(text) - 1)
    h = min(1.15, width / advance)
    x = -advance * h / 2
    for c in text:
        w, strokes = _GLYPHS[c]
        for stroke in strokes:
            pen.line([(x + px * h, -h / 2 + py * h) for px, py in stroke], 0.19 * h, colour)
        x += (w + gap) * h


def _mirror(points: Sequence[Point]) -> List[Point]:
    return [(-x, y) for x, y in points]


def _car(pen: _Pen, cx: float, colour: Colour) -> None:
    pen.rect(cx - 0.32, -0.08, cx + 0.32, 0.25, colour)
    pen.polygon([(cx - 0.24, -0.07), (cx - 0.15, -0.34), (cx + 0.15, -0.34), (cx + 0.24, -0.07)], colour)
    pen.rect(cx - 0.3, 0.2, cx - 0.16, 0.38, colour)
    pen.rect(cx + 0.16, 0.2, cx + 0.3, 0.38, colour)


def _truck(pen: _Pen, ink: Colour) -> None:
    pen.rect(-0.75, -0.42, 0.25, 0.22, ink)
    pen.polygon([(0.3, -0.2), (0.6, -0.2), (0.78, 0.02), (0.78, 0.22), (0.3, 0.22)], ink)
    for x in (-0.5, -0.22, 0.55):
        pen.disc((x, 0.3), 0.14, ink)


def _end_bars(pen: _Pen, colour: Colour) -> None:
    for off in (-0.24, -0.12, 0.0, 0.12, 0.24):  # corner to corner: the sign's outline cuts them
        pen.line([(-1.6 + off, 1.6 + off), (1.6 + off, -1.6 + off)], 0.045, colour)


def _walker(pen: _Pen, ink: Colour) -> None:
    pen.disc((0.05, -0.72), 0.17, ink)
    pen.line([(0.0, -0.45), (-0.05, 0.2)], 0.2, ink)
    pen.line([(-0.45, 0.0), (-0.15, -0.35), (0.1, -0.35), (0.4, -0.05)], 0.13, ink)
    pen.line([(-0.05, 0.2), (-0.4, 0.85)], 0.15, ink)
    pen.line([(-0.05, 0.2), (0.3, 0.5), (0.35, 0.85)], 0.15, ink)


def _signals(pen: _Pen, ink: Colour) -> None:
    pen.rect(-0.33, -0.92, 0.33, 0.92, BLACK)
    for y, colour in ((-0.55, (225, 30, 30)), (0.0, (245, 190, 0)), (0.55, (20, 170, 70))):
        pen.disc((0.0, y), 0.22, colour)


def _roundabout(pen: _Pen, ink: Colour) -> None:
    for start in (200, 320, 80):
        pen.arrow(_arc(0.0, 0.0, 0.62, 0.62, start, start + 85, 10), 0.2, ink, head=1.6)


def _snow(pen: _Pen, ink: Colour) -> None:
    for angle in (90, 30, 150):
        dx, dy = 0.85 * math.cos(math.radians(angle)), 0.85 * math.sin(math.radians(angle))
        pen.line([(-dx, -dy), (dx, dy)], 0.12, ink)
        for s in (-1, 1):
            pen.disc((s * dx, s * dy), 0.1, ink)


def _bumps(pen: _Pen, ink: Colour) -> None:
    xs = np.linspace(-0.9, 0.9, 40)
    pen.line([(float(x), 0.45 - 0.55 * math.sin(math.pi * (x + 0.9) / 0.9) ** 2) for x in xs], 0.16, ink)


def _waves(pen: _Pen, ink: Colour) -> None:
    ys = np.linspace(-0.85, 0.85, 30)
    for x0 in (-0.35, 0.35):
        pen.line([(x0 + 0.2 * math.sin(4.5 * y), float(y)) for y in ys], 0.13, ink)


def _double_curve(pen: _Pen, ink: Colour) -> None:
    pen.arrow([(-0.2, 0.9), (-0.2, 0.45), (0.25, 0.05), (0.25, -0.25), (-0.15, -0.6), (-0.2, -0.9)], 0.17, ink)


_CURVE = [(0.25, 0.9), (0.25, 0.15), (0.12, -0.2), (-0.12, -0.48), (-0.42, -0.7)]
_TURN = [(-0.3, 0.85), (-0.3, -0.15), (0.75, -0.15)]
_BRANCH = [(0.0, 0.45), (0.2, 0.12), (0.75, 0.12)]
_KEEP = [(-0.5, -0.5), (0.45, 0.45)]
_NO_LEFT = [(0.2, 0.65), (0.2, -0.1), (-0.6, -0.1)]

def _cars(pen: _Pen, ink: Colour) -> None:
    _car(pen, -0.38, BLACK)
    _car(pen, 0.38, RED)


def _no_left(pen: _Pen, ink: Colour) -> None:
    pen.arrow(_NO_LEFT, 0.2, ink)
    pen.line([(-0.75, -0.75), (0.75, 0.75)], 0.2, RED)


def _cross_x(pen: _Pen, ink: Colour) -> None:
    pen.line([(-0.9, -0.9), (0.9, 0.9)], 0.3, ink)
    pen.line([(-0.9, 0.9), (0.9, -0.9)], 0.3, ink)


def _end_80(pen: _Pen, ink: Colour) -> None:
    _text(pen, "80", ink)
    _end_bars(pen, BLACK)


def _exclaim(pen: _Pen, ink: Colour) -> None:
    pen.polygon([(-0.13, -0.85), (0.13, -0.85), (0.06, 0.35), (-0.06, 0.35)], ink)
    pen.disc((0.0, 0.68), 0.14, ink)


def _narrows(pen: _Pen, ink: Colour) -> None:
    left = [(-0.55, 0.9), (-0.55, 0.2), (-0.2, -0.3), (-0.2, -0.9)]
    pen.line(left, 0.15, ink)
    pen.line(_mirror(left), 0.15, ink)


def _plus(pen: _Pen, ink: Colour) -> None:
    pen.rect(-0.13, -0.9, 0.13, 0.9, ink)
    pen.rect(-0.65, -0.08, 0.65, 0.08, ink)


def _up_and(pen: _Pen, ink: Colour, side: float) -> None:
    """An arrow ahead and a branch to the ``side`` (+1 right, -1 left)."""
    pen.arrow([(-0.15 * side, 0.9), (-0.15 * side, -0.85)], 0.24, ink)
    pen.arrow([(side * (x - 0.15), y) for x, y in _BRANCH], 0.2, ink)


def _chevrons(pen: _Pen, ink: Colour) -> None:
    for x in (-1.0, 0.0, 1.0):
        pen.line([(x - 0.35, -0.75), (x + 0.25, 0.0), (x - 0.35, 0.75)], 0.32, ink)


#: pictogram name -> draw(pen, ink colour), in the pictogram box's units.
_PICTOGRAMS: Dict[str, Callable[[_Pen, Colour], None]] = {
    "none": lambda pen, ink: None,
    "cars": _cars,
    "truck": _truck,
    "no_left": _no_left,
    "slash": lambda pen, ink: pen.line([(-0.9, -0.9), (0.9, 0.9)], 0.3, ink),
    "cross_x": _cross_x,
    "end_80": _end_80,
    "end_bars": lambda pen, ink: _end_bars(pen, BLACK),
    "bar": lambda pen, ink: pen.rect(-0.95, -0.24, 0.95, 0.24, ink),
    "end_band": lambda pen, ink: pen.line([(-1.3, 1.3), (1.3, -1.3)], 0.3, DARK),
    "exclaim": _exclaim,
    "curve_left": lambda pen, ink: pen.arrow(_CURVE, 0.2, ink),
    "curve_right": lambda pen, ink: pen.arrow(_mirror(_CURVE), 0.2, ink),
    "double_curve": _double_curve,
    "bumps": _bumps,
    "waves": _waves,
    "narrows": _narrows,
    "signals": _signals,
    "walker": _walker,
    "plus": _plus,
    "snow": _snow,
    "arrow_up": lambda pen, ink: pen.arrow([(0.0, 0.9), (0.0, -0.9)], 0.28, ink),
    "turn_right": lambda pen, ink: pen.arrow(_TURN, 0.28, ink),
    "turn_left": lambda pen, ink: pen.arrow(_mirror(_TURN), 0.28, ink),
    "up_right": lambda pen, ink: _up_and(pen, ink, 1.0),
    "up_left": lambda pen, ink: _up_and(pen, ink, -1.0),
    "keep_right": lambda pen, ink: pen.arrow(_KEEP, 0.28, ink),
    "keep_left": lambda pen, ink: pen.arrow(_mirror(_KEEP), 0.28, ink),
    "roundabout": _roundabout,
    "chevrons": _chevrons,
}

#: scheme -> (layers: (inset from the edge, colour), outermost first; the pictogram's ink).
_SCHEMES: Dict[str, Tuple[List[Tuple[float, Colour]], Colour]] = {
    "prohibitory": ([(0.0, WHITE), (0.035, RED), (0.22, WHITE)], BLACK),
    "restricted": ([(0.0, WHITE), (0.035, RED), (0.22, BLUE)], RED),
    "end": ([(0.0, DARK), (0.025, WHITE)], GREY),
    "no_entry": ([(0.0, WHITE), (0.035, RED)], WHITE),
    "mandatory": ([(0.0, WHITE), (0.04, BLUE)], WHITE),
    "warning": ([(0.0, WHITE), (0.05, RED), (0.24, WHITE)], BLACK),
    "stop": ([(0.0, WHITE), (0.04, RED)], WHITE),
    "priority": ([(0.0, BLACK), (0.03, WHITE), (0.26, YELLOW)], BLACK),
    "info_blue": ([(0.0, WHITE), (0.06, BLUE)], WHITE),
    "info_green": ([(0.0, WHITE), (0.06, GREEN)], WHITE),
    "chevron": ([(0.0, BLACK), (0.05, YELLOW)], BLACK),
}

#: shape -> (number of sides (0: circle), first vertex's angle in degrees, centre y, circumradius; the
#: pictogram box: centre y and scale). ``rect`` is the wide rectangle, half-height 0.55.
_SHAPES: Dict[str, Tuple[int, float, float, float, float, float]] = {
    "circle": (0, 0.0, 0.0, 1.0, 0.0, 0.7),
    "triangle_up": (3, -90.0, 0.17, 1.06, 0.22, 0.46),
    "triangle_down": (3, 90.0, -0.17, 1.06, -0.22, 0.44),
    "octagon": (8, 22.5, 0.0, 1.04, 0.0, 0.85),
    "diamond": (4, -90.0, 0.0, 1.0, 0.0, 0.52),
    "square": (4, 45.0, 0.0, 1.27, 0.0, 0.72),
    "rect": (4, 0.0, 0.0, 0.0, 0.0, 0.48),
}


def _outline(shape: str, inset: float) -> List[Point]:
    """The shape's outline moved ``inset`` inwards (sign units); a circle as a 72-gon."""
    sides, angle0, cy, radius = _SHAPES[shape][:4]
    if shape == "rect":
        x, y = 1.0 - inset, 0.55 - inset
        return [(-x, -y), (x, -y), (x, y), (-x, y)]
    if sides == 0:
        return _arc(0.0, 0.0, radius - inset, radius - inset, 0, 360, 73)[:-1]
    r = radius - inset / math.cos(math.pi / sides)  # the inradius shrinks by ``inset``
    return [(r * math.cos(math.radians(angle0 + k * 360 / sides)), cy + r * math.sin(math.radians(angle0 + k * 360 / sides)))
            for k in range(sides)]


@lru_cache(maxsize=None)
def _template(sign_index: int) -> Image.Image:
    """The clean sign of :data:`SIGNS` ``[sign_index]``: ``RGBa`` (premultiplied), ``TEMPLATE_PX`` a side."""
    sign = SIGNS[sign_index]
    layers, ink = _SCHEMES[sign.scheme]
    image = Image.new("RGBA", (_RENDER_PX, _RENDER_PX), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    pen = _Pen(draw, _RENDER_PX)
    for inset, colour in layers:
        pen.polygon(_outline(sign.shape, inset), colour)
    box = _SHAPES[sign.shape]
    inner = _Pen(draw, _RENDER_PX, 0.0, box[4], box[5])
    if sign.pictogram.startswith("text:"):
        _text(inner, sign.pictogram[5:], ink)
    else:
        _PICTOGRAMS[sign.pictogram](inner, ink)
    mask = Image.new("L", image.size, 0)  # the pictogram stays inside the sign
    ImageDraw.Draw(mask).polygon([pen.xy(p) for p in _outline(sign.shape, 0.0)], fill=255)
    image.putalpha(mask)
    return image.convert("RGBa").resize((TEMPLATE_PX, TEMPLATE_PX), Image.Resampling.LANCZOS)


def render_sign(sign_index: int, px: int = TEMPLATE_PX) -> np.ndarray:
    """The clean sign :data:`SIGNS` ``[sign_index]`` on a transparent square: ``uint8 (px, px, 4)`` RGBA."""
    return np.asarray(_template(sign_index).resize((px, px), Image.Resampling.LANCZOS).convert("RGBA"))

# --------------------------------------------------------------------------------------------- the photographs


def _colour(rng: np.random.Generator, vivid: bool = False) -> np.ndarray:
    """A random colour in [0, 1]: mostly the muted ones of a street scene; ``vivid``: a saturated one."""
    hue = rng.random()
    sat = rng.uniform(0.6, 1.0) if vivid else rng.uniform(0.0, 0.5) ** 1.5
    val = rng.uniform(0.35, 1.0) if vivid else rng.uniform(0.12, 0.95)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """The background's base, ``float32 (h, w, 3)`` in [0, 1]: sky over ground, a gradient, or a flat wall."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # sky and ground, meeting at a soft horizon
        sky = np.array(colorsys.hsv_to_rgb(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.5), rng.uniform(0.5, 1.0)))
        top, ground = sky.astype(np.float32), _colour(rng)
        t = 0.5 + 0.5 * np.tanh((yy - rng.uniform(0.15, 0.85) * h) / rng.uniform(1.0, 0.3 * h + 2))
    else:  # a gradient between two colours, in any direction (kind 2: a nearly flat wall)
        top, ground = _colour(rng), _colour(rng)
        if kind == 2:
            ground = np.clip(top + rng.normal(0, 0.06, 3), 0, 1).astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    return top * (1 - t[..., None]) + ground * t[..., None]


def _blobs(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Out-of-focus things: ellipses and boxes of random colours (some vivid), then blurred."""
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for _ in range(rng.integers(2, 9)):
        colour = tuple(int(255 * c) for c in _colour(rng, vivid=rng.random() < 0.25))
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        rx, ry = rng.uniform(0.08, 0.5) * w, rng.uniform(0.08, 0.5) * h
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)(box, fill=colour)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3.0) * min(w, h) / 32))


def _clutter(rng: np.random.Generator, image: Image.Image, sign_xy: Point) -> None:
    """Sharp things in front of the background: a pole under the sign, poles, wires, coloured shapes."""
    draw = ImageDraw.Draw(image)
    w, h = image.size
    grey = tuple(int(255 * v) for v in np.repeat(rng.uniform(0.3, 0.8), 3))
    if rng.random() < 0.5:  # the sign's own pole
        half = max(1.0, rng.uniform(0.02, 0.05) * w)
        draw.rectangle([sign_xy[0] - half, sign_xy[1], sign_xy[0] + half, h], fill=grey)
    for _ in range(rng.integers(0, 4)):
        colour = tuple(int(255 * c) for c in _colour(rng, vivid=rng.random() < 0.4))
        kind = rng.integers(4)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if kind == 0:  # a pole or a post
            half = max(0.6, rng.uniform(0.01, 0.04) * w)
            draw.rectangle([x - half, rng.uniform(-0.2, 0.5) * h, x + half, h], fill=colour)
        elif kind == 1:  # a wire or an edge
            draw.line([(x, y), (rng.uniform(0, w), rng.uniform(0, h))], fill=colour, width=int(rng.integers(1, 3)))
        else:  # a coloured shape: a disc, a ring or a triangle, often cut by the frame
            r = rng.uniform(0.08, 0.3) * min(w, h)
            if kind == 2:
                draw.ellipse([x - r, y - r, x + r, y + r], outline=colour if rng.random() < 0.5 else None,
                             fill=None if rng.random() < 0.5 else colour, width=max(1, int(r / 4)))
            else:
                draw.polygon([(x, y - r), (x + r, y + 0.8 * r), (x - r, y + 0.8 * r)], fill=colour)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Foliage-like colour texture and grain, ``float32 (h, w, 3)`` around 0."""
    cells = (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 1)
    coarse = rng.random(cells) + rng.normal(0, 0.15, cells[:2] + (3,))  # mostly light and shade, a little hue
    coarse = (np.clip(coarse, 0, 1) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    fine = rng.normal(0, 1, (h, w, 1)).astype(np.float32)
    return (smooth / 255 - 0.5) * rng.uniform(0.0, 0.3) + fine * rng.uniform(0.0, 0.06)


def _homography(src: Sequence[Point], dst: Sequence[Point]) -> Tuple[float, ...]:
    """The 8 coefficients of PIL's ``PERSPECTIVE`` transform that take each ``dst`` point to its ``src`` point."""
    rows, rhs = [], []
    for (u, v), (x, y) in zip(src, dst):
        rows += [[x, y, 1, 0, 0, 0, -x * u, -y * u], [0, 0, 0, x, y, 1, -x * v, -y * v]]
        rhs += [u, v]
    return tuple(float(c) for c in np.linalg.solve(np.array(rows, float), np.array(rhs, float)))


@dataclass(frozen=True)
class SignPose:
    """Where a sample's sign is, in its ``width`` x ``height`` frame: its ``side`` and centre (``cx``, ``cy``) in
    pixels, its ``rotation`` in degrees (clockwise on screen: y points down) and each corner's extra shift
    ``jitter`` ``(4, 2)`` in pixels (the mild perspective)."""
    width: int
    height: int
    side: float
    cx: float
    cy: float
    rotation: float
    jitter: np.ndarray


def _pose(rng: np.random.Generator, h: int, w: int, scale: Tuple[float, float], rotation: float = 15.0) -> SignPose:
    """The sign's width a share of the frame's shorter side drawn from ``scale`` (default 35-80 %), turned up to
    +-``rotation`` degrees, each corner moved by a few per cent of its size, at a random place (up to 8 % of it may leave the
    frame)."""
    side = rng.uniform(*scale) * min(h, w)
    cx = w / 2 + rng.uniform(-1, 1) * (max(0.0, (w - side) / 2) + 0.08 * side)
    cy = h / 2 + rng.uniform(-1, 1) * (max(0.0, (h - side) / 2) + 0.08 * side)
    turn = rng.uniform(-rotation, rotation)
    jitter = np.clip(rng.normal(0, 0.05, (4, 2)), -0.12, 0.12) * side
    return SignPose(w, h, side, cx, cy, turn, jitter)


def _place_sign(rng: np.random.Generator, sign_index: int, h: int, w: int, scale: Tuple[float, float],
                rotation: float = 15.0) -> Tuple[np.ndarray, np.ndarray, Point]:
    """The sign warped into an ``h`` x ``w`` frame at a random :func:`_pose`: premultiplied ``(h, w, 3)``
    colour, ``(h, w, 1)`` alpha, centre."""
    pose = _pose(rng, h, w, scale, rotation)
    side, cx, cy = pose.side, pose.cx, pose.cy
    turn = math.radians(pose.rotation)
    cos, sin, half = math.cos(turn), math.sin(turn), side / 2
    corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
    dst = [(cx + x * cos - y * sin + jx, cy + x * sin + y * cos + jy) for (x, y), (jx, jy) in zip(corners, pose.jitter)]
    template = _reduced(sign_index, min(p for p in _LEVELS if p >= min(2 * side, TEMPLATE_PX)))
    px = template.size[0]
    src = [(0.0, 0.0), (float(px), 0.0), (float(px), float(px)), (0.0, float(px))]
    warped = template.transform((w, h), Image.Transform.PERSPECTIVE, _homography(src, dst),
                                Image.Resampling.BILINEAR)
    layer = np.asarray(warped, dtype=np.float32) / 255
    return layer[..., :3], layer[..., 3:], (cx, cy)


#: The sides the template is kept at: the warp starts from the smallest at least twice the sign's size
#: (reducing it first keeps the bilinear warp from aliasing).
_LEVELS = (24, 32, 48, 64, 96, TEMPLATE_PX)


@lru_cache(maxsize=None)
def _reduced(sign_index: int, px: int) -> Image.Image:
    template = _template(sign_index)
    return template if px == TEMPLATE_PX else template.resize((px, px), Image.Resampling.LANCZOS)


def _weather(rng: np.random.Generator, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The sign's own look: its paint faded and dimmed, sometimes a glare; premultiplied like ``colour``."""
    grey = colour.mean(axis=2, keepdims=True)
    colour = (colour + (grey - colour) * rng.uniform(0.0, 0.3)) * rng.uniform(0.7, 1.1)
    if rng.random() < 0.15:
        h, w = alpha.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        spot = np.exp(-((xx - rng.uniform(0, w)) ** 2 + (yy - rng.uniform(0, h)) ** 2) / (0.02 * h * w + 1))
        colour = colour + (alpha - colour) * (spot[..., None] * rng.uniform(0.3, 0.8)).astype(np.float32)
    return colour


def _lighting(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Whole-frame light: a shadow edge, colour cast, brightness, contrast, gamma; stays in [0, 1]."""
    h, w = image.shape[:2]
    if rng.random() < 0.35:  # a shadow over part of the frame, across the sign too
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        dist = (xx - rng.uniform(0, w)) * math.cos(angle) + (yy - rng.uniform(0, h)) * math.sin(angle)
        shade = 0.5 + 0.5 * np.tanh(dist / rng.uniform(0.6, 6.0))
        image = image * (1 - shade[..., None] * rng.uniform(0.25, 0.6))
    image = image * np.exp(rng.normal(0, 0.08, 3)).astype(np.float32)  # colour cast
    image = image * rng.uniform(0.35, 1.35)  # brightness
    mean = image.mean()
    image = np.clip((image - mean) * rng.uniform(0.5, 1.25) + mean, 0, 1)  # contrast
    return image ** np.float32(math.exp(rng.uniform(math.log(0.67), math.log(1.5))))  # gamma


def _camera(rng: np.random.Generator, image: np.ndarray) -> Image.Image:
    """Focus, motion, sensor noise and sometimes JPEG: ``float32 (h, w, 3)`` in [0, 1] -> an RGB image."""
    h, w = image.shape[:2]
    picture = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.9) * min(h, w) / 40))
    if rng.random() < 0.15:  # a little motion blur: three taps along one of four directions
        kernel = np.zeros((3, 3))
        dy, dx = ((0, 1), (1, 0), (1, 1), (1, -1))[int(rng.integers(4))]
        for t in (-1, 0, 1):
            kernel[1 + t * dy, 1 + t * dx] = 1 / 3
        picture = picture.filter(ImageFilter.Kernel((3, 3), kernel.ravel().tolist(), scale=1))
    noisy = np.asarray(picture, dtype=np.float32) + rng.normal(0, rng.uniform(1.0, 9.0), (h, w, 3))
    picture = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=int(rng.integers(35, 90)))
        picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return picture


def _sample(rng: np.random.Generator, sign_index: int, h: int, w: int, scale: Tuple[float, float],
            rotation: float = 15.0) -> Image.Image:
    """One photograph of the sign, ``h`` x ``w``."""
    colour, alpha, centre = _place_sign(rng, sign_index, h, w, scale, rotation)
    base = Image.fromarray((_scene(rng, h, w) * 255 + 0.5).astype(np.uint8))
    base = _blobs(rng, base)
    _clutter(rng, base, centre)
    background = np.clip(np.asarray(base, dtype=np.float32) / 255 + _texture(rng, h, w), 0, 1)
    image = background * (1 - alpha) + _weather(rng, colour, alpha)
    return _camera(rng, _lighting(rng, image))


def _frame_size(rng: np.random.Generator, size: Tuple[int, int, int, int]) -> Tuple[int, int]:
    """``(h, w)`` for :func:`parse_size`'s ``(h_min, h_max, w_min, w_max)``: a range draws a side, then the other
    within about +-12 % of it."""
    h_lo, h_hi, w_lo, w_hi = size
    h = int(rng.integers(h_lo, h_hi + 1))
    w = int(np.clip(round(h * math.exp(rng.uniform(-0.12, 0.12))), w_lo, w_hi))
    return h, w


def sign_image(sign_index: int, seed: int, split: str, index: int,
               size: Tuple[int, int, int, int] = (28, 64, 28, 64),
               scale: Tuple[float, float] = (0.35, 0.8), rotation: float = 15.0) -> np.ndarray:
    """Sample ``index`` of sign :data:`SIGNS` ``[sign_index]`` in ``split`` (``"train"``/``"test"``) for ``seed``:
    ``uint8 (H, W, 3)`` RGB, its sides drawn from ``size`` (:func:`parse_size`), the sign's width a share of the
    shorter side drawn from ``scale`` (:func:`parse_scale`), turned up to +-``rotation`` degrees. The same
    arguments give the same pixels."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], sign_index, index])
    h, w = _frame_size(rng, size)
    return np.asarray(_sample(rng, sign_index, h, w, scale, rotation))


def sign_pose(sign_index: int, seed: int, split: str, index: int, size: Tuple[int, int, int, int] = (28, 64, 28, 64),
              scale: Tuple[float, float] = (0.35, 0.8), rotation: float = 15.0) -> SignPose:
    """Where the sign of :func:`sign_image` with the same arguments is (what a spatial transformer should undo),
    without drawing it: the generator's first draws replayed."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], sign_index, index])
    h, w = _frame_size(rng, size)
    return _pose(rng, h, w, scale, rotation)

# --------------------------------------------------------------------------------------------- the dataset

MIN_SIDE, MAX_SIDE = 8, 512


def parse_size(text: str) -> Tuple[int, int, int, int]:
    """``"N"`` (N x N), ``"H,W"`` or ``"LO-HI"`` (each image's sides drawn from LO..HI) -> ``(h_min, h_max,
    w_min, w_max)``; sides 8..512. Raises ``ValueError`` saying what is wrong."""
    text = text.strip()
    parts = text.split("-") if "-" in text else text.split(",") if "," in text else [text, text]
    try:
        a, b = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected N, H,W or LO-HI (e.g. 32, 32,48 or 28-64), got {text!r}") from None
    if not (MIN_SIDE <= a <= MAX_SIDE and MIN_SIDE <= b <= MAX_SIDE):
        raise ValueError(f"sides must be {MIN_SIDE}..{MAX_SIDE} px, got {text!r}")
    if "-" in text:
        if a > b:
            raise ValueError(f"LO-HI needs LO <= HI, got {text!r}")
        return a, b, a, b
    return a, a, b, b


def parse_scale(text: str) -> Tuple[float, float]:
    """``"LO-HI"`` (drawn per image) or ``"F"`` -> ``(lo, hi)``: the sign's width as a share of the frame's shorter
    side, 0.1..1.2. Raises ``ValueError`` saying what is wrong."""
    parts = text.strip().split("-")
    try:
        lo, hi = (float(parts[0]), float(parts[-1])) if len(parts) <= 2 else (math.nan, math.nan)
    except ValueError:
        lo = hi = math.nan
    if not (0.1 <= lo <= hi <= 1.2):
        raise ValueError(f"expected LO-HI or one share of the frame, 0.1..1.2 with LO <= HI (e.g. 0.35-0.8), "
                         f"got {text!r}")
    return lo, hi


@dataclass
class SignsConfig:
    """How ``make-dataset signs`` makes the set; its flags are these fields."""
    classes: int = option(len(SIGNS), f"how many classes, 2..{len(SIGNS)} (fewer: spread over the catalogue)",
                          minimum=2, maximum=len(SIGNS))
    train_per_class: int = option(200, "training images per class", minimum=1)
    test_per_class: int = option(50, "test images per class", minimum=1)
    seed: int = option(0, "the seed: the same seed writes the same bytes", minimum=0)
    size: str = option("28-64", "image size: N (N x N px), H,W, or LO-HI (each image's sides drawn from LO..HI "
                       "px, GTSRB-like)", metavar="SIZE")
    sign_scale: str = option("0.35-0.8", "the sign's width as a share of the frame's shorter side: LO-HI (drawn per "
                             "image) or one number; smaller signs leave more for an STN to find", metavar="LO-HI")
    max_rotation: float = option(15.0, "the largest rotation of a sign, degrees (each drawn from +-this; GTSRB's "
                                       "signs are turned little)", minimum=0, maximum=180)
    rec: bool = option(False, "also write im2rec's train.lst/.rec/.idx and test.lst/.rec/.idx beside the folders")
    overwrite: bool = option(False, "replace DIR when it holds a dataset this command made")
    workers: Optional[int] = option(None, "processes drawing images (default: one per core)", minimum=1)

    def check(self) -> Tuple[Tuple[int, int, int, int], Tuple[float, float]]:
        """Raise :class:`~stn_gluon._runtime.errors.ConfigError` on a bad field; the parsed ``size`` and
        ``sign_scale``."""
        validate_fields(self)
        for name, parse in (("size", parse_size), ("sign_scale", parse_scale)):
            try:
                parse(getattr(self, name))
            except ValueError as err:
                raise ConfigError(name, str(err)) from None
        return parse_size(self.size), parse_scale(self.sign_scale)


@dataclass(frozen=True)
class _ClassJob:
    """One class of one split, for a worker: its folder, label, sign, how many and where its ids start."""
    folder: str
    split: str
    label: int
    sign_index: int
    count: int
    first_id: int
    seed: int
    size: Tuple[int, int, int, int]
    scale: Tuple[float, float]
    rotation: float
    rec: bool


def _write_class(job: _ClassJob) -> List[bytes]:
    """Write the job's PNGs; with ``rec``, their im2rec records (``pack_img`` as PNG, label = class) in order."""
    os.makedirs(job.folder)
    records = []
    for i in range(job.count):
        pixels = sign_image(job.sign_index, job.seed, job.split, i, job.size, job.scale, job.rotation)
        Image.fromarray(pixels).save(os.path.join(job.folder, f"{i:05d}.png"), format="PNG")
        if job.rec:
            import mxnet as mx  # lazy: MXNet only for the .rec (its import costs a second)

            header = mx.recordio.IRHeader(0, float(job.label), job.first_id + i, 0)
            records.append(mx.recordio.pack_img(header, pixels[..., ::-1], quality=3, img_fmt=".png"))  # cv2: BGR
    return records


def _write_rec(root: str, split: str, jobs: Sequence[_ClassJob], records: Sequence[List[bytes]]) -> None:
    """im2rec's three files for ``split``: ``.lst`` (id, label, path under ``root/split``), ``.rec`` and ``.idx``."""
    import mxnet as mx  # lazy: MXNet only for the .rec

    lines = []
    writer = mx.recordio.MXIndexedRecordIO(os.path.join(root, f"{split}.idx"), os.path.join(root, f"{split}.rec"), "w")
    try:
        for job, packed in zip(jobs, records):
            for i, record in enumerate(packed):
                writer.write_idx(job.first_id + i, record)
                lines.append(f"{job.first_id + i}\t{float(job.label):f}\t{os.path.basename(job.folder)}/{i:05d}.png\n")
    finally:
        writer.close()
    with open(os.path.join(root, f"{split}.lst"), "w") as f:
        f.write("".join(lines))


def _jobs(root: str, split: str, signs: Sequence[int], count: int, config: SignsConfig) -> List[_ClassJob]:
    size, scale = config.check()
    return [_ClassJob(os.path.join(root, split, folder_name(label, sign)), split, label, sign, count, label * count,
                      config.seed, size, scale, config.max_rotation, config.rec) for label, sign in enumerate(signs)]


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _quiet_worker() -> None:
    """Ctrl-C is the parent's to handle (it stops the pool): a worker prints no traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_splits(root: str, config: SignsConfig, echo: Callable[[str], None]) -> None:
    signs = class_subset(config.classes)
    workers = min(config.workers or _default_workers(), len(signs))
    if config.rec:
        import mxnet  # noqa: F401  # lazy: MXNet only for the .rec; loaded once here, the workers inherit it
    pool = multiprocessing.get_context("fork").Pool(workers, _quiet_worker) if workers > 1 else None
    try:
        for split, count in (("train", config.train_per_class), ("test", config.test_per_class)):
            start = time.perf_counter()
            jobs = _jobs(root, split, signs, count, config)
            records = pool.map(_write_class, jobs, chunksize=1) if pool else [_write_class(job) for job in jobs]
            if config.rec:
                _write_rec(root, split, jobs, records)
            seconds = time.perf_counter() - start
            echo(f"{split}: {len(jobs) * count} images of {len(jobs)} classes in {seconds:.1f} s "
                 f"({workers} process{'es' if workers > 1 else ''})")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _manifest(config: SignsConfig) -> Dict[str, Any]:
    signs = class_subset(config.classes)
    return dict(generator=GENERATOR, format_version=FORMAT_VERSION, seed=config.seed, size=config.size, sign_scale=config.sign_scale,
                max_rotation=config.max_rotation,
                train_per_class=config.train_per_class, test_per_class=config.test_per_class, rec=config.rec,
                classes=[SIGNS[i].name for i in signs], folders=[folder_name(l, i) for l, i in enumerate(signs)])


def _made_here(path: str) -> bool:
    """Whether folder ``path`` holds a dataset this module wrote (its ``dataset.json`` says so)."""
    try:
        with open(os.path.join(path, "dataset.json")) as f:
            return json.load(f).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(out_dir: str, overwrite: bool) -> None:
    """Refuse a file, a non-empty folder without ``overwrite``, and (even with it) one this module did not make."""
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise StnGluonError(f"{out_dir}: is a file, not a folder")
    here = os.path.abspath(os.getcwd())
    if here == os.path.abspath(out_dir) or here.startswith(os.path.join(os.path.abspath(out_dir), "")):
        raise StnGluonError(f"{out_dir}: is the current folder or holds it; name a new folder for the dataset")
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return
    if not overwrite:
        raise StnGluonError(f"{out_dir}: the folder is not empty; choose another one, or give overwrite to "
                            "replace a dataset made by this command", params=("overwrite",))
    if not _made_here(out_dir):
        raise StnGluonError(f"{out_dir}: the folder holds files this command did not write (no dataset.json of "
                            "make-dataset): overwrite replaces only its own datasets; empty it or choose "
                            "another folder", params=("overwrite",))


def _swap_in(tmp: str, out_dir: str) -> None:
    """Move the finished ``tmp`` folder to ``out_dir``, replacing what is there (an empty folder or an old set)."""
    if not os.path.isdir(out_dir):
        os.rename(tmp, out_dir)
        return
    old = f"{tmp}.old"
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def make_signs_dataset(out_dir: str, config: Optional[SignsConfig] = None,
                       echo: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Write the synthetic sign set into folder ``out_dir`` (see the module's description); the manifest.

    Everything is written into a temporary folder beside ``out_dir``, which then replaces it: an interrupted
    run leaves ``out_dir`` as it was. Raises :class:`~stn_gluon._runtime.errors.StnGluonError` (one line) for a
    bad setting, a non-empty ``out_dir`` without ``overwrite``, or a place nothing can be written.
    """
    config = config or SignsConfig()
    config.check()
    out_dir = os.path.normpath(out_dir)
    _check_target(out_dir, config.overwrite)
    parent = os.path.dirname(os.path.abspath(out_dir))
    writable_dir(parent, "the folder of DIR", create=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".tmp", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        _write_splits(tmp, config, echo or (lambda line: None))
        manifest = _manifest(config)
        with open(os.path.join(tmp, "names.txt"), "w") as f:
            f.write("".join(name + "\n" for name in manifest["classes"]))
        write_json(os.path.join(tmp, "dataset.json"), manifest)
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
