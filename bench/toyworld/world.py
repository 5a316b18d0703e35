"""A procedural toy world with exactly measurable attributes: one flat shape on a grey background.

No real Stable Diffusion weights exist on our machines, so slider fidelity is measured on a tiny
text-to-image model trained on this world, where every attribute of a generated image can be read
back from its pixels:

* ``Attributes``: size (side of the shape's bounding box as a fraction of the image side), colour (a
  name from ``PALETTE``), shape (``SHAPES``), x, y (centre of the bounding box, fractions of the image
  side, y down) and background (grey brightness). ``sample_attributes`` draws them independently.
* ``render``: float32 H×W×3 in [0, 1], the background blended with the shape's colour by the exact
  fraction of each pixel the shape covers (``coverage``): antialiased, and the shape's area is exact.
* ``caption`` / ``caption_variants``: "a large red circle in the top left on a dark background", with
  words for binned continuous attributes (``SIZE_WORDS``, ``BACKGROUND_WORDS``, a 3×3 position grid).
* ``measure``: every attribute back from pixels alone, robust to noise and blur (see its docstring).
* ``make_dataset``, ``with_attribute``, ``pairs_for``: training sets and before/after image pairs that
  differ in one attribute only (image sliders).

Ranges. The shape must stay fully inside the image (a clipped shape cannot be measured exactly) *and*
the attributes must be independent (a model that learns "large shapes sit in the middle" would make a
size slider move the shape, which the benchmark would then have to tell apart from slider
interference). Both hold when ``SIZE_RANGE[1] / 2 + MARGIN <= POSITION_RANGE[0]``, so size spans
0.2–0.6 and centres 0.34–0.66 (asserted below). ``Attributes`` itself accepts any shape that fits the
image, for edits past the sampled ranges.

numpy only (PIL is not needed here; the webui provides it, the tests do not need it).
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PALETTE: dict[str, tuple[float, float, float]] = {
    # Saturated, away from 0 and 1 (noise is not clipped much) and ≥ 0.5 from every grey, with hues
    # ≥ 56° apart (0°, 56°, 124°, 225°, 284°).
    "red": (0.90, 0.10, 0.10),
    "yellow": (0.90, 0.85, 0.10),
    "green": (0.10, 0.80, 0.15),
    "blue": (0.10, 0.30, 0.90),
    "purple": (0.65, 0.10, 0.85),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
# Area of the shape over the area of its bounding box (triangle: isosceles, apex up, base = height = size).
FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}

SIZE_RANGE = (0.2, 0.6)
POSITION_RANGE = (0.34, 0.66)
BACKGROUND_RANGE = (0.1, 0.9)
MARGIN = 0.04  # smallest gap between a sampled shape and the image edge: 1.3 px at 32 px
assert SIZE_RANGE[1] / 2 + MARGIN <= POSITION_RANGE[0] + 1e-9, "sampled shapes must fit at every position"

SIZE_WORDS = ("tiny", "small", "medium", "large", "huge")
BACKGROUND_WORDS = ("dark", "grey", "light")
ROW_WORDS = ("top", "middle", "bottom")
COLUMN_WORDS = ("left", "centre", "right")
# (row, column) → phrase; the middle row and centre column drop their word ("at the top", "on the left").
POSITION_PHRASES = {
    (0, 0): "in the top left", (0, 1): "at the top", (0, 2): "in the top right",
    (1, 0): "on the left", (1, 1): "in the centre", (1, 2): "on the right",
    (2, 0): "in the bottom left", (2, 1): "at the bottom", (2, 2): "in the bottom right",
}
CONTINUOUS = ("size", "x", "y", "background")
CATEGORICAL = ("colour", "shape")
ATTRIBUTES = ("size", "colour", "shape", "x", "y", "background")
RANGES = {"size": SIZE_RANGE, "x": POSITION_RANGE, "y": POSITION_RANGE, "background": BACKGROUND_RANGE}


@dataclass(frozen=True)
class Attributes:
    size: float  # bounding-box side / image side
    colour: str  # key of PALETTE
    shape: str  # one of SHAPES
    x: float  # bounding-box centre, fraction of the width (0 = left)
    y: float  # bounding-box centre, fraction of the height (0 = top)
    background: float  # grey level in [0, 1]

    def __post_init__(self) -> None:
        if self.colour not in PALETTE:
            raise ValueError(f"colour must be one of {COLOURS}, got {self.colour!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if not 0.0 < self.size <= 1.0:
            raise ValueError(f"size must be in (0, 1], got {self.size}")
        half = self.size / 2
        for name, centre in (("x", self.x), ("y", self.y)):
            if centre - half < -1e-9 or centre + half > 1 + 1e-9:
                raise ValueError(f"{name}={centre} with size={self.size} puts the shape outside the image")
        if not 0.0 <= self.background <= 1.0:
            raise ValueError(f"background must be in [0, 1], got {self.background}")

    @property
    def rgb(self) -> tuple[float, float, float]:
        return PALETTE[self.colour]


def sample_attributes(rng: np.random.Generator) -> Attributes:
    """Independent uniform draws (fixed order, so a seed gives the same world on every machine)."""
    size = rng.uniform(*SIZE_RANGE)
    colour = COLOURS[int(rng.integers(len(COLOURS)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    x, y = rng.uniform(*POSITION_RANGE), rng.uniform(*POSITION_RANGE)
    background = rng.uniform(*BACKGROUND_RANGE)
    return Attributes(float(size), colour, shape, float(x), float(y), float(background))


def with_attribute(attrs: Attributes, **changes: float | str) -> Attributes:
    """A copy of ``attrs`` with some attributes changed (validated like any ``Attributes``)."""
    unknown = set(changes) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attributes {sorted(unknown)}; expected some of {ATTRIBUTES}")
    return dataclasses.replace(attrs, **changes)


# ---------------------------------------------------------------------------------------------------
# Rendering


def shape_mask(attrs: Attributes, n: int) -> np.ndarray:
    """Boolean n×n inside-test of the shape at the centres of an n×n grid over the unit square."""
    c = (np.arange(n) + 0.5) / n
    u, v = c[None, :], c[:, None]
    half = attrs.size / 2
    if attrs.shape == "circle":
        return (u - attrs.x) ** 2 + (v - attrs.y) ** 2 <= half**2
    if attrs.shape == "square":
        return (np.abs(u - attrs.x) <= half) & (np.abs(v - attrs.y) <= half)
    top = attrs.y - half  # apex; the half-width grows by 1/2 per unit of depth, to size/2 at the base
    return (v <= attrs.y + half) & (np.abs(u - attrs.x) <= (v - top) / 2)


def half_width(attrs: Attributes, v: np.ndarray) -> np.ndarray:
    """Half the horizontal span of the shape at heights v (inside its vertical extent)."""
    half = attrs.size / 2
    if attrs.shape == "circle":
        return np.sqrt(np.maximum(half**2 - (v - attrs.y) ** 2, 0.0))
    if attrs.shape == "square":
        return np.full_like(v, half)
    return (v - (attrs.y - half)) / 2  # triangle: 0 at the apex, size/2 at the base


def coverage(attrs: Attributes, size: int = 32, antialias: bool = True, subrows: int = 8) -> np.ndarray:
    """Fraction of each pixel covered by the shape (size×size float32); 0/1 at pixel centres without antialias.

    Integrated rather than supersampled: each pixel row is cut into ``subrows`` strips; a strip's overlap
    with the shape's vertical extent is exact, the shape's span on it is taken at the middle of that
    overlap (exact for the straight-sided square and triangle), and the span's overlap with each pixel
    column is exact. Coverage, and so area, is then continuous in size and position: no staircase of a
    supersampling grid, so sizes a hundredth of a pixel apart still measure in order.
    """
    if not antialias:
        return shape_mask(attrs, size).astype(np.float32)
    half = attrs.size / 2
    edges = np.arange(size * subrows + 1) / (size * subrows)
    low, high = np.maximum(edges[:-1], attrs.y - half), np.minimum(edges[1:], attrs.y + half)
    height = np.maximum(high - low, 0.0)
    span = half_width(attrs, (low + high) / 2)[:, None]
    columns = np.arange(size + 1) / size
    overlap = np.minimum(columns[None, 1:], attrs.x + span) - np.maximum(columns[None, :-1], attrs.x - span)
    strips = height[:, None] * np.maximum(overlap, 0.0)  # area of the shape in each strip × pixel column
    return (strips.reshape(size, subrows, size).sum(axis=1) * size * size).astype(np.float32)


def render(attrs: Attributes, size: int = 32, antialias: bool = True) -> np.ndarray:
    """float32 size×size×3 in [0, 1]: grey background, flat-coloured shape blended by its coverage."""
    alpha = coverage(attrs, size, antialias)[..., None]
    colour = np.asarray(attrs.rgb, dtype=np.float32)
    return (attrs.background * (1 - alpha) + colour * alpha).astype(np.float32)


def render_all(attributes: Sequence[Attributes], size: int = 32) -> np.ndarray:
    """N×size×size×3 float32 renders (N may be 0)."""
    if not attributes:
        return np.zeros((0, size, size, 3), np.float32)
    return np.stack([render(a, size) for a in attributes])


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(images) * 255), 0, 255).astype(np.uint8)


def contact_sheet(images: Sequence[np.ndarray] | np.ndarray, columns: int = 6, scale: int = 4,
                  gap: int = 2) -> np.ndarray:
    """One uint8 image of the images in a grid (nearest-neighbour upscaled), for looking at a set."""
    tiles = [np.repeat(np.repeat(to_uint8(_as_float(im)), scale, 0), scale, 1) for im in images]
    rows = -(-len(tiles) // columns)
    th, tw = tiles[0].shape[:2]
    sheet = np.full((rows * (th + gap) + gap, columns * (tw + gap) + gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[gap + r * (th + gap):gap + r * (th + gap) + th, gap + c * (tw + gap):gap + c * (tw + gap) + tw] = tile
    return sheet


# ---------------------------------------------------------------------------------------------------
# Captions


def bin_index(value: float, lo: float, hi: float, bins: int) -> int:
    """Equal-width bin of value over [lo, hi]; values past either end fall in the end bins."""
    return int(min(bins - 1, max(0, math.floor((value - lo) / (hi - lo) * bins))))


def size_word(size: float) -> str:
    return SIZE_WORDS[bin_index(size, *SIZE_RANGE, len(SIZE_WORDS))]


def background_word(background: float) -> str:
    return BACKGROUND_WORDS[bin_index(background, *BACKGROUND_RANGE, len(BACKGROUND_WORDS))]


def position_cell(x: float, y: float) -> tuple[int, int]:
    """(row, column) of the 3×3 grid over the sampled position range."""
    return bin_index(y, *POSITION_RANGE, 3), bin_index(x, *POSITION_RANGE, 3)


def position_phrase(x: float, y: float) -> str:
    return POSITION_PHRASES[position_cell(x, y)]


def caption(attrs: Attributes) -> str:
    """"a large red circle in the top left on a dark background"."""
    return (f"a {size_word(attrs.size)} {attrs.colour} {attrs.shape} {position_phrase(attrs.x, attrs.y)} "
            f"on a {background_word(attrs.background)} background")


def caption_variants(attrs: Attributes) -> list[str]:
    """The caption and three rewordings with the same attribute words (the first is ``caption``)."""
    size, bg = size_word(attrs.size), background_word(attrs.background)
    where = position_phrase(attrs.x, attrs.y)
    thing = f"{size} {attrs.colour} {attrs.shape}"
    short_where = where.split(" the ", 1)[1]  # "top left", "top", "centre", …
    return [
        caption(attrs),
        f"a {bg} background with a {thing} {where}",
        f"a {thing} on a {bg} background, {where}",
        f"{thing}, {short_where}, {bg} background",
    ]


# ---------------------------------------------------------------------------------------------------
# Data sets and image pairs


def make_dataset(n: int, seed: int, size: int = 32,
                 variants: bool = False) -> tuple[np.ndarray, list[str], list[Attributes]]:
    """n uint8 images (n×size×size×3), their captions and attributes; the same for the same seed.

    ``variants`` picks one of ``caption_variants`` per image (from the same seeded generator).
    """
    rng = np.random.default_rng(seed)
    attributes = [sample_attributes(rng) for _ in range(n)]
    images = to_uint8(render_all(attributes, size))
    if variants:
        captions = [caption_variants(a)[int(rng.integers(4))] for a in attributes]
    else:
        captions = [caption(a) for a in attributes]
    return images, captions, attributes


# Default ends of a before → after change: the lowest and highest quarter of a continuous range;
# a fixed pair for the categorical ones.
DEFAULT_ENDS: dict[str, tuple[object, object]] = {
    **{name: ((lo, lo + (hi - lo) / 4), (hi - (hi - lo) / 4, hi)) for name, (lo, hi) in RANGES.items()},
    "colour": ("red", "blue"),
    "shape": ("circle", "square"),
}


@dataclass
class Pairs:
    """Image pairs that differ in ``attribute`` only: before[i] and after[i] share every other attribute."""

    attribute: str
    before: np.ndarray  # N×H×W×3 float32
    after: np.ndarray
    before_attrs: list[Attributes]
    after_attrs: list[Attributes]

    def __len__(self) -> int:
        return len(self.before_attrs)


def _draw(end: object, rng: np.random.Generator) -> float | str:
    """One value of a pair end: a fixed value, or a uniform draw from a (lo, hi) range."""
    if isinstance(end, tuple):
        return float(rng.uniform(*end))
    return end if isinstance(end, str) else float(end)


def pairs_for(attribute: str, n: int, seed: int, size: int = 32, before: object = None,
              after: object = None) -> Pairs:
    """n (before, after) render pairs where only ``attribute`` changes, e.g. size small → large.

    ``before`` / ``after`` are a value (a float, or a colour / shape name) or a (lo, hi) range to draw
    from per pair; by default the lowest → highest quarter of a continuous range, red → blue and
    circle → square. Every other attribute is drawn per pair and shared by both images.
    """
    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    default_before, default_after = DEFAULT_ENDS[attribute]
    before = default_before if before is None else before
    after = default_after if after is None else after
    rng = np.random.default_rng(seed)
    before_attrs, after_attrs = [], []
    for _ in range(n):
        base = sample_attributes(rng)
        before_attrs.append(with_attribute(base, **{attribute: _draw(before, rng)}))
        after_attrs.append(with_attribute(base, **{attribute: _draw(after, rng)}))
    return Pairs(attribute, render_all(before_attrs, size), render_all(after_attrs, size), before_attrs, after_attrs)


# ---------------------------------------------------------------------------------------------------
# Measurement

MIN_CONTRAST = 0.15  # shape colour must be at least this far (RGB distance) from the background
MIN_PIXELS = 3  # smallest connected shape, in pixels above the threshold
MIN_CORE = 4  # fewest interior pixels to average for the colour (else the most distant pixels are used)
NOISE_SIGMAS = 4.0  # threshold floor: this many robust spreads above the border's distance to its median


@dataclass(frozen=True)
class Measured:
    """Attributes read back from an image. Shape fields are None when no shape was found."""

    background: float  # grey level: mean of the per-channel medians of the border pixels
    background_rgb: tuple[float, float, float]
    confidence: float  # 0 (nothing found) … 1 (one clean, well-contrasted shape); see ``measure``
    size: float | None = None  # sqrt(area / FILL[shape]): the generating size, for a clean render
    extent: float | None = None  # class-free size: max of the bounding-box width and height
    area: float | None = None  # shape area / image area (coverage-weighted)
    fill: float | None = None  # area / (bounding-box width · height), ≈ FILL[shape]; a diagnostic
    shape_fit: float | None = None  # 1 = exactly one of SHAPES (see ``classify_shape``)
    colour: str | None = None  # nearest palette hue
    rgb: tuple[float, float, float] | None = None  # mean colour of the shape's interior
    hue: float | None = None  # degrees in [0, 360), for continuous colour change
    saturation: float | None = None
    shape: str | None = None
    x: float | None = None  # bounding-box centre, as in Attributes
    y: float | None = None

    @property
    def found(self) -> bool:
        return self.shape is not None

    def attributes(self) -> Attributes | None:
        """The measurement as ``Attributes`` (None when no shape was found or it does not fit the image)."""
        if not self.found:
            return None
        try:
            return Attributes(self.size, self.colour, self.shape, self.x, self.y, min(1.0, max(0.0, self.background)))
        except ValueError:
            return None


def _as_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    return image.astype(np.float32)


def _border(values: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels of an H×W(×C) array, flattened to N(×C)."""
    return np.concatenate([values[0], values[-1], values[1:-1, 0], values[1:-1, -1]])


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The split of ``values`` that maximises the between-class variance (Otsu 1979)."""
    top = float(values.max())
    if top <= 0:
        return 0.0
    hist, edges = np.histogram(values, bins=bins, range=(0.0, top))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(np.float64)  # pixels at or below each bin
    mass = np.cumsum(hist * centres)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mass / weight
        mean_high = (total_mass - mass) / (total - weight)
        between = weight * (total - weight) * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    return float(edges[int(np.argmax(between)) + 1])


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                    max(-dx, 0):w - max(dx, 0)]
    return out


def dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """8-neighbour (3×3 square) dilation, repeated."""
    for _ in range(steps):
        mask = np.logical_or.reduce([_shift(mask, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    return mask


def erode(mask: np.ndarray) -> np.ndarray:
    """3×3 erosion (pixels outside the image count as outside the mask)."""
    return np.logical_and.reduce([_shift(mask, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (flood fill over a set: images here are small)."""
    todo = set(zip(*(idx.tolist() for idx in np.nonzero(mask)), strict=True))
    best: list[tuple[int, int]] = []
    while todo:
        start = todo.pop()
        queue, members = deque([start]), [start]
        while queue:
            r, c = queue.popleft()
            for nb in ((r - 1, c - 1), (r - 1, c), (r - 1, c + 1), (r, c - 1), (r, c + 1), (r + 1, c - 1), (r + 1, c),
                       (r + 1, c + 1)):
                if nb in todo:
                    todo.remove(nb)
                    queue.append(nb)
                    members.append(nb)
        if len(members) > len(best):
            best = members
    out = np.zeros(mask.shape, bool)
    if best:
        out[tuple(np.array(best).T)] = True
    return out


def hue_saturation(rgb: Sequence[float]) -> tuple[float, float]:
    """HSV hue in degrees [0, 360) and saturation of an RGB triple in [0, 1]."""
    r, g, b = (min(1.0, max(0.0, float(v))) for v in rgb)
    h, s, _ = colorsys.rgb_to_hsv(r, g, b)
    return (h * 360) % 360, s


PALETTE_HUES = {name: hue_saturation(rgb)[0] for name, rgb in PALETTE.items()}


def nearest_colour(rgb: Sequence[float]) -> str:
    """Palette entry with the nearest hue (brightness- and saturation-free, so a washed-out or darker
    generated colour still reads as itself); nearest RGB when the colour is almost grey."""
    hue, saturation = hue_saturation(rgb)
    if saturation < 0.1:
        return min(PALETTE, key=lambda name: float(np.sum((np.asarray(PALETTE[name]) - np.asarray(rgb)) ** 2)))
    return min(PALETTE, key=lambda name: abs((PALETTE_HUES[name] - hue + 180) % 360 - 180))


def _smooth(values: np.ndarray) -> np.ndarray:
    """3×3 binomial smoothing (zero outside the image)."""
    padded = np.pad(values, 1)
    h, w = values.shape
    rows = 0.25 * padded[:, :w] + 0.5 * padded[:, 1:w + 1] + 0.25 * padded[:, 2:]
    return 0.25 * rows[:h] + 0.5 * rows[1:h + 1] + 0.25 * rows[2:]


def shape_template(kind: str, area: float, cx: float, cy: float, side: int) -> np.ndarray:
    """Coverage of the clean shape of ``kind`` with the given area (fraction of the image) and centroid."""
    size = min(1.0, math.sqrt(area / FILL[kind]))
    half = size / 2
    cy = cy - size / 6 if kind == "triangle" else cy  # centroid → bounding-box centre
    x, y = min(max(cx, half), 1 - half), min(max(cy, half), 1 - half)
    return coverage(Attributes(size, COLOURS[0], kind, x, y, 0.5), side)


def classify_shape(alpha: np.ndarray, area: float, cx: float, cy: float) -> tuple[str, float]:
    """Shape kind of a coverage map (H×W, ~1 inside the shape, ~0 outside) and how well it fits, in [0, 1].

    Template matching: each kind's clean shape with the measured area and centroid is rendered, and the
    kind whose coverage is nearest (sum of squares) wins. Both maps are smoothed 3×3 first, which
    averages noise out and makes a blurred edge look like a sharp one. On noisy, blurred renders this
    beats the bounding-box fill ratio (returned by ``measure`` as ``fill``), whose width and height
    estimates noise and blur bias. fit = 1 - residual / template energy (1 = a perfect shape).
    """
    target = _smooth(alpha)
    residuals = {}
    for kind in SHAPES:
        template = _smooth(shape_template(kind, area, cx, cy, alpha.shape[1]))
        residuals[kind] = (float(((target - template) ** 2).sum()), float((template**2).sum()))
    kind = min(residuals, key=lambda k: residuals[k][0])
    residual, energy = residuals[kind]
    return kind, max(0.0, 1.0 - residual / max(energy, 1e-12))


def measure(image: np.ndarray) -> Measured:
    """Every attribute of a toy-world image, from its pixels alone (uint8 or float in [0, 1], N×N×3).

    1. Background: per-channel median of the border ring (sampled shapes never reach it; a blob on
       part of it does not move a median).
    2. Shape pixels: RGB distance to the background, split by Otsu's threshold, raised to the border's
       noise floor (median + ``NOISE_SIGMAS`` robust spreads of the border's distances) so that noise
       alone is no shape; the largest 8-connected component is the shape (specks elsewhere are dropped).
    3. Colour: mean of the component's interior (its 3×3 erosion, so antialiased edges do not mix in
       background; for a shape too small to have ``MIN_CORE`` such pixels, its pixels within 5 % of
       the largest distance) → ``rgb``, HSV ``hue``/``saturation`` and the nearest palette hue.
    4. Coverage: each pixel's projection on background → colour, over the component dilated by two
       pixels (catching antialiased and blurred edges). Not clipped: zero-mean noise then cancels in
       the sums instead of piling up as a bias.
    5. Area = Σ coverage; centroid = coverage-weighted mean; shape kind by template matching
       (``classify_shape``); size = sqrt(area / FILL[kind]) (area is the most noise-robust size
       statistic, and exact for clean renders); y moves up by size/6 for a triangle (its centroid sits
       a sixth of its height below its bounding-box centre).

    ``confidence`` = (share of above-threshold pixels in the component) × shape_fit × min(1, contrast /
    (10 · noise)), noise σ estimated from the border: ≈ 1 for a clean render, lower with clutter, a
    shape that is none of SHAPES, or contrast near the noise.
    """
    img = _as_float(image)[..., :3]
    h, w = img.shape[:2]
    if h != w:
        raise ValueError(f"toy-world images are square, got {h}×{w}")
    bg_rgb = np.median(_border(img), axis=0)
    background = float(bg_rgb.mean())
    not_found = Measured(background, tuple(float(v) for v in bg_rgb), 0.0)

    dist = np.linalg.norm(img - bg_rgb, axis=-1)
    border = _border(dist)
    # The border's distances are pure noise: their median scales with the noise σ (≈ 1.54 σ for RGB).
    noise = float(np.median(border)) / 1.54
    spread = 1.4826 * float(np.median(np.abs(border - np.median(border))))
    threshold = max(otsu_threshold(dist), float(np.median(border)) + NOISE_SIGMAS * spread, MIN_CONTRAST / 2)
    above = dist > threshold
    component = largest_component(above)
    if component.sum() < MIN_PIXELS:
        return not_found

    core = erode(component)
    if core.sum() < MIN_CORE:  # a tiny shape: its most background-unlike pixels are its interior
        core = component & (dist >= 0.95 * float(dist[component].max()))
    rgb = img[core].mean(axis=0)
    direction = rgb - bg_rgb
    contrast = float(np.linalg.norm(direction))
    if contrast < MIN_CONTRAST:
        return not_found

    alpha = np.where(dilate(component, 2), (img - bg_rgb) @ direction / contrast**2, 0.0)
    area_px = float(alpha.sum())
    if area_px <= 0:
        return not_found
    area = area_px / (h * w)
    cx = float((alpha.sum(axis=0) * (np.arange(w) + 0.5)).sum()) / (area_px * w)
    cy = float((alpha.sum(axis=1) * (np.arange(h) + 0.5)).sum()) / (area_px * h)
    shape, fit = classify_shape(alpha, area, cx, cy)
    size = math.sqrt(area / FILL[shape])
    clipped = np.clip(alpha, 0.0, 1.0)
    # Bounding box from the largest coverage per column / row: exact for an antialiased square.
    width, height = float(clipped.max(axis=0).sum()) / w, float(clipped.max(axis=1).sum()) / h

    hue, saturation = hue_saturation(rgb)
    share = float(component.sum()) / float(above.sum())
    confidence = share * fit * (min(1.0, contrast / (10 * noise)) if noise > 0 else 1.0)
    return Measured(
        background=background, background_rgb=tuple(float(v) for v in bg_rgb), confidence=confidence,
        size=size, extent=max(width, height), area=area, fill=area / max(width * height, 1e-12), shape_fit=fit,
        colour=nearest_colour(rgb), rgb=tuple(float(v) for v in rgb), hue=hue, saturation=saturation,
        shape=shape, x=cx, y=cy - size / 6 if shape == "triangle" else cy,
    )
