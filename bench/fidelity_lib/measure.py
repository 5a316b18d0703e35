"""Measuring a grid of generated images: each attribute read back from the pixels, and how it changes with α.

A grid is seeds × α, the same starting noise per seed. From it: the slope and Spearman ρ of the slider's
attribute against α, and, against each seed's α = 0 image, the change of the attribute, of every other one
(interference), of the shape's kind and of the pixels (structure), at one α or interpolated to the α where the
mean effect matches a reference (the prompt edit's). The oracle is the same measurement of renders where only
the attribute changed: what a perfect edit changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from bench.fidelity_lib.sliders import SliderSpec
from bench.toyworld import world

# Continuous features read from an image, and the span each is normalised by (its range in the world).
FEATURES = {"size": 0.4, "blueness": 1.6, "background": 0.8, "x": 0.32, "y": 0.32}


def features(image: np.ndarray) -> dict[str, float | str | None]:
    m = world.measure(image)
    blueness = (m.rgb[2] - m.rgb[0]) if m.rgb is not None else math.nan
    return {"size": m.extent if m.extent is not None else math.nan, "blueness": blueness,
            "background": m.background, "x": m.x if m.x is not None else math.nan,
            "y": m.y if m.y is not None else math.nan, "shape": m.shape}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    ranks = [np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def slope(alphas: np.ndarray, values: np.ndarray) -> float:
    keep = np.isfinite(values)
    if keep.sum() < 2 or np.ptp(alphas[keep]) == 0:
        return math.nan
    return float(np.polyfit(alphas[keep], values[keep], 1)[0])


@dataclass
class Grid:
    """Features of images[seed][α] and the images themselves (float, [0, 1])."""

    alphas: np.ndarray
    values: dict[str, np.ndarray]  # feature → [seeds, alphas]
    shapes: np.ndarray  # [seeds, alphas] of str | None
    images: np.ndarray  # [seeds, alphas, 32, 32, 3]

    @classmethod
    def of(cls, alphas: np.ndarray, images: np.ndarray) -> Grid:
        seeds = images.shape[0]
        measured = [[features(images[s, a]) for a in range(len(alphas))] for s in range(seeds)]
        values = {f: np.array([[m[f] for m in row] for row in measured], dtype=float) for f in FEATURES}
        shapes = np.array([[m["shape"] for m in row] for row in measured], dtype=object)
        return cls(alphas, values, shapes, images.astype(np.float32) / 255.0)

    def effect(self, feature: str) -> dict[str, float]:
        scale = FEATURES[feature]
        values = self.values[feature] / scale
        pooled_alphas = np.broadcast_to(self.alphas, values.shape).reshape(-1)
        means = np.array([np.nanmean(values[:, i]) if np.isfinite(values[:, i]).any() else math.nan
                          for i in range(len(self.alphas))])
        return {"slope": slope(pooled_alphas, values.reshape(-1)), "rho_means": spearman(self.alphas, means),
                "rho_pooled": spearman(pooled_alphas, values.reshape(-1)),
                "found": float(np.isfinite(self.values["x"]).mean())}

    def change_at(self, feature: str, column: int) -> dict[str, float]:
        """Target change, interference and structure of column ``column`` against the α = 0 column."""
        zero = int(np.argmin(np.abs(self.alphas)))
        return change(self.values, self.shapes, self.images, feature, zero, column)

    def at_effect(self, feature: str, wanted: float) -> dict[str, float]:
        """Every quantity of ``change_at``, interpolated linearly in α to where the mean effect reaches ``wanted``.

        Walks the positive α from 0 (where every change is 0) and interpolates between the two α whose
        effects bracket ``wanted``; a slider that never gets there is reported at its largest α, ``reached``
        False. ``alpha`` is the interpolated α.
        """
        zero = int(np.argmin(np.abs(self.alphas)))
        columns = sorted((i for i, a in enumerate(self.alphas) if a > 0), key=lambda i: self.alphas[i])
        previous = change(self.values, self.shapes, self.images, feature, zero, zero) | {"alpha": 0.0}
        for column in columns:
            current = self.change_at(feature, column) | {"alpha": float(self.alphas[column])}
            if np.isfinite(current["effect"]) and current["effect"] >= wanted:
                span = current["effect"] - previous["effect"]
                w = (wanted - previous["effect"]) / span if span > 0 else 1.0
                return _mix(previous, current, w) | {"reached": True}
            previous = current
        return previous | {"reached": False}


def matched_change(grid: Grid, feature: str, wanted: float, how: str) -> dict[str, float]:
    """The change at matched effect: interpolated in α, or at the positive α whose effect is nearest."""
    if how == "interpolate":
        return grid.at_effect(feature, wanted)
    positive = [i for i, a in enumerate(grid.alphas) if a > 0] or [int(np.argmax(grid.alphas))]
    column = min(positive, key=lambda i: abs(grid.change_at(feature, i)["effect"] - wanted))
    return grid.change_at(feature, column) | {"alpha": float(grid.alphas[column]), "reached": True}


def _mix(a: dict, b: dict, w: float) -> dict:
    """(1 − w)·a + w·b, key by key (nested dicts too)."""
    return {k: _mix(a[k], b[k], w) if isinstance(a[k], dict) else (1 - w) * a[k] + w * b[k] for k in a}


def change(values: dict[str, np.ndarray], shapes: np.ndarray, images: np.ndarray, feature: str, base: int,
           column: int) -> dict[str, float]:
    delta = {f: (values[f][:, column] - values[f][:, base]) / FEATURES[f] for f in FEATURES}
    others = [np.nanmean(np.abs(delta[f])) for f in FEATURES if f != feature and np.isfinite(delta[f]).any()]
    both = np.array([a is not None and b is not None for a, b in zip(shapes[:, column], shapes[:, base],
                                                                      strict=True)])
    shape_change = float(np.mean(shapes[both, column] != shapes[both, base])) if both.any() else math.nan
    rms = float(np.sqrt(((images[:, column] - images[:, base]) ** 2).mean(axis=(1, 2, 3))).mean())
    target = float(np.nanmean(delta[feature])) if np.isfinite(delta[feature]).any() else math.nan
    by_feature = {f: float(np.nanmean(np.abs(delta[f]))) if np.isfinite(delta[f]).any() else math.nan
                  for f in FEATURES}
    return {"effect": target, "interference": float(np.mean(others)) if others else math.nan,
            "shape_change": shape_change, "structure": rms, "by_feature": by_feature}


def with_word(attrs: world.Attributes, feature: str, word: str) -> world.Attributes:
    """``attrs`` with the slider's attribute set to the middle of ``word``'s range (or to the colour ``word``)."""
    if feature == "blueness":
        return replace(attrs, colour=word)
    words, (lo, hi), field = {"size": (world.SIZE_WORDS, world.SIZE_RANGE, "size"),
                              "background": (world.BACKGROUND_WORDS, world.BACKGROUND_RANGE, "background")}[feature]
    centre = lo + (words.index(word) + 0.5) / len(words) * (hi - lo)
    return replace(attrs, **{field: centre})


def oracle(attributes: list[world.Attributes], spec: SliderSpec) -> dict[str, float]:
    """Change of the measured features from each render to the render with only the attribute changed."""
    changed = [with_word(a, spec.feature, spec.edit[1]) for a in attributes]
    images = np.stack([world.render_all(attributes), world.render_all(changed)], axis=1)
    grid = Grid.of(np.array([0.0, 1.0]), world.to_uint8(images))
    return grid.change_at(spec.feature, 1)


def oracle_at(attributes: list[world.Attributes], spec: SliderSpec, wanted: float) -> dict[str, float]:
    """The oracle moved only as far as the mean effect ``wanted`` (the prompt edit's): what a perfect edit of the
    same size changes, a floor for the structure change at matched effect.

    Each render's attribute goes a fraction w of the way to the edit's high word (w > 1 goes past it), w found
    by bisection on the measured effect. Colour and background enter a render linearly, so there the image is
    the blend of the two renders; a size is rendered, kept inside the frame.
    """
    changed = [with_word(a, spec.feature, spec.edit[1]) for a in attributes]
    before, after = world.render_all(attributes), world.render_all(changed)

    def moved(w: float) -> np.ndarray:
        if spec.feature != "size":
            return before + w * (after - before)
        return world.render_all([replace(a, size=min(a.size + w * (b.size - a.size), 2 * min(a.x, 1 - a.x, a.y,
                                                                                               1 - a.y)))
                                 for a, b in zip(attributes, changed, strict=True)])

    def measured(w: float) -> dict[str, float]:
        images = np.stack([before, moved(w)], axis=1)
        return Grid.of(np.array([0.0, 1.0]), world.to_uint8(images)).change_at(spec.feature, 1) | {"alpha": w}

    low, high = 0.0, 1.0
    while measured(high)["effect"] < wanted and high < 8:
        low, high = high, 2 * high
    for _ in range(20):
        middle = (low + high) / 2
        low, high = (middle, high) if measured(middle)["effect"] < wanted else (low, middle)
    return measured(high) | {"reached": True}
