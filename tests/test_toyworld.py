"""The toy world of the fidelity benchmark: renders, captions, and measurement of every attribute from pixels."""

from __future__ import annotations

import numpy as np
import pytest

from bench.toyworld import world
from bench.toyworld.world import Attributes, measure, render


def hue_error(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def degrade(image: np.ndarray, rng: np.random.Generator, noise: float = 0.05, sigma: float = 0.6) -> np.ndarray:
    """Slight Gaussian blur (5-tap, edge-padded) + Gaussian noise, clipped and quantised like a saved image."""
    taps = np.exp(-np.arange(-2, 3) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    rows = sum(t * padded[:, i:i + w] for i, t in enumerate(taps))
    blurred = sum(t * rows[i:i + h] for i, t in enumerate(taps))
    return world.to_uint8(np.clip(blurred + rng.normal(0, noise, image.shape), 0, 1))


def samples(n: int, seed: int) -> list[Attributes]:
    rng = np.random.default_rng(seed)
    return [world.sample_attributes(rng) for _ in range(n)]


def test_sampled_attributes_in_range_and_fit_the_image():
    for a in samples(500, 0):
        assert world.SIZE_RANGE[0] <= a.size <= world.SIZE_RANGE[1]
        assert world.BACKGROUND_RANGE[0] <= a.background <= world.BACKGROUND_RANGE[1]
        for centre in (a.x, a.y):
            assert world.POSITION_RANGE[0] <= centre <= world.POSITION_RANGE[1]
            assert centre - a.size / 2 >= world.MARGIN - 1e-9 and centre + a.size / 2 <= 1 - world.MARGIN + 1e-9
        assert a.colour in world.PALETTE and a.shape in world.SHAPES


def test_render_is_flat_shape_on_grey():
    a = Attributes(0.5, "red", "square", 0.5, 0.5, 0.3)
    image = render(a)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, 0], [0.3, 0.3, 0.3], atol=1e-6)
    np.testing.assert_allclose(image[16, 16], world.PALETTE["red"], atol=1e-6)
    # Antialiased area is exact: 16×16 px for a 0.5 square, whatever the sub-pixel offset.
    shifted = world.coverage(world.with_attribute(a, x=0.5 + 0.3 / 32, y=0.5 - 0.1 / 32))
    assert shifted.sum() == pytest.approx(256, abs=0.5)
    hard = render(a, antialias=False)  # pixel centres only: background or shape, nothing between
    assert np.all(np.isclose(hard[..., 1], 0.1) | np.isclose(hard[..., 1], 0.3))


def test_attributes_validate():
    with pytest.raises(ValueError, match="outside the image"):
        Attributes(0.6, "red", "circle", 0.2, 0.5, 0.5)
    with pytest.raises(ValueError, match="colour"):
        Attributes(0.3, "pink", "circle", 0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="shape"):
        Attributes(0.3, "red", "star", 0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="unknown attributes"):
        world.with_attribute(samples(1, 0)[0], hue=3)


def test_measure_recovers_clean_renders_exactly():
    size_errors, position_errors = [], []
    for a in samples(200, 1):
        m = measure(render(a))
        assert m.found and m.confidence > 0.99
        assert m.shape == a.shape and m.colour == a.colour
        assert m.size == pytest.approx(a.size, abs=0.03)
        assert m.x == pytest.approx(a.x, abs=0.02) and m.y == pytest.approx(a.y, abs=0.02)
        assert m.background == pytest.approx(a.background, abs=0.01)
        assert hue_error(m.hue, world.PALETTE_HUES[a.colour]) < 0.01
        assert m.fill == pytest.approx(world.FILL[a.shape], abs=0.15)  # the diagnostic fill ratio
        assert m.attributes() is not None
        size_errors.append(abs(m.size - a.size))
        position_errors += [abs(m.x - a.x), abs(m.y - a.y)]
    # Much tighter than required: the benchmark's slopes rely on it (0.002 = 1/16 px at 32 px).
    assert max(size_errors) < 0.002 and max(position_errors) < 0.002


def test_measure_accepts_uint8():
    a = Attributes(0.4, "purple", "triangle", 0.45, 0.55, 0.8)
    m = measure(world.to_uint8(render(a)))
    assert (m.shape, m.colour) == ("triangle", "purple")
    assert m.size == pytest.approx(0.4, abs=0.01) and m.background == pytest.approx(0.8, abs=0.005)


def test_measure_robust_to_noise_and_blur():
    rng = np.random.default_rng(3)
    attrs = samples(150, 4)
    measured = [measure(degrade(render(a), rng)) for a in attrs]
    assert all(m.found for m in measured)
    assert np.mean([m.shape == a.shape for m, a in zip(measured, attrs, strict=True)]) >= 0.95
    assert np.mean([m.colour == a.colour for m, a in zip(measured, attrs, strict=True)]) >= 0.95
    assert max(abs(m.size - a.size) for m, a in zip(measured, attrs, strict=True)) <= 0.06
    assert max(abs(m.x - a.x) for m, a in zip(measured, attrs, strict=True)) <= 0.03
    assert max(abs(m.y - a.y) for m, a in zip(measured, attrs, strict=True)) <= 0.03
    assert max(abs(m.background - a.background) for m, a in zip(measured, attrs, strict=True)) <= 0.03


def test_measure_finds_nothing_in_plain_or_noisy_background():
    rng = np.random.default_rng(5)
    assert not measure(np.full((32, 32, 3), 0.4, np.float32)).found
    for level in (0.2, 0.5, 0.85):
        m = measure(np.clip(level + rng.normal(0, 0.05, (32, 32, 3)), 0, 1))
        assert not m.found and m.confidence == 0 and m.attributes() is None
        assert m.background == pytest.approx(level, abs=0.02)


def test_measure_keeps_the_shape_and_drops_specks():
    a = Attributes(0.4, "blue", "circle", 0.4, 0.6, 0.2)
    image = render(a)
    image[3:5, 26:28] = world.PALETTE["yellow"]  # a 2×2 speck away from the shape
    m = measure(image)
    assert m.shape == "circle" and m.colour == "blue" and m.size == pytest.approx(0.4, abs=0.01)
    assert 0.9 < m.confidence < 1.0  # the speck lowers it


@pytest.mark.parametrize("shape", world.SHAPES)
def test_size_measurement_is_monotone(shape):
    sweep = np.arange(0.12, 0.72, 0.01)
    measured = [measure(render(Attributes(float(s), "green", shape, 0.5, 0.5, 0.5))).size for s in sweep]
    assert np.all(np.diff(measured) > 0)
    np.testing.assert_allclose(measured, sweep, atol=0.01)


def test_hue_is_continuous_between_palette_colours():
    # A colour between red and yellow reads as the hue between them, and as the nearer palette entry.
    a = Attributes(0.5, "red", "square", 0.5, 0.5, 0.5)
    image = render(a)
    image[render(world.with_attribute(a, colour="yellow"))[..., 1] > 0.6] = (0.9, 0.35, 0.1)
    m = measure(image)
    assert 10 < m.hue < 30 and m.colour == "red"


@pytest.mark.parametrize("attribute", world.ATTRIBUTES)
def test_pairs_differ_in_one_attribute_only(attribute):
    pairs = world.pairs_for(attribute, 12, seed=6)
    assert len(pairs) == 12 and pairs.before.shape == pairs.after.shape == (12, 32, 32, 3)
    tolerance = {"size": 0.01, "x": 0.006, "y": 0.006, "background": 0.005}
    for before, after, a, b in zip(pairs.before, pairs.after, pairs.before_attrs, pairs.after_attrs, strict=True):
        assert [n for n in world.ATTRIBUTES if getattr(a, n) != getattr(b, n)] == [attribute]
        mb, ma = measure(before), measure(after)
        for name in world.ATTRIBUTES:
            if name == attribute:
                continue
            if name in world.CATEGORICAL:
                assert getattr(mb, name) == getattr(ma, name) == getattr(a, name)
            else:
                assert getattr(mb, name) == pytest.approx(getattr(ma, name), abs=tolerance[name]), name
    if attribute in world.CONTINUOUS:  # default ends: lowest quarter → highest quarter of the range
        lo, hi = world.RANGES[attribute]
        assert all(getattr(b, attribute) - getattr(a, attribute) >= (hi - lo) / 2 - 1e-9
                   for a, b in zip(pairs.before_attrs, pairs.after_attrs, strict=True))
    else:
        assert {getattr(b, attribute) for b in pairs.after_attrs} == {world.DEFAULT_ENDS[attribute][1]}


def test_pairs_with_explicit_ends():
    pairs = world.pairs_for("colour", 4, seed=0, before="green", after="purple")
    assert [measure(im).colour for im in pairs.before] == ["green"] * 4
    assert [measure(im).colour for im in pairs.after] == ["purple"] * 4
    fixed = world.pairs_for("size", 3, seed=0, before=0.25, after=(0.5, 0.55))
    assert all(a.size == 0.25 and 0.5 <= b.size <= 0.55 for a, b in zip(fixed.before_attrs, fixed.after_attrs, strict=True))


def test_captions_name_the_attributes():
    a = Attributes(0.58, "red", "circle", 0.36, 0.35, 0.15)
    assert world.caption(a) == "a huge red circle in the top left on a dark background"
    b = Attributes(0.21, "blue", "triangle", 0.5, 0.64, 0.88)
    assert world.caption(b) == "a tiny blue triangle at the bottom on a light background"
    c = Attributes(0.4, "yellow", "square", 0.65, 0.5, 0.5)
    assert world.caption(c) == "a medium yellow square on the right on a grey background"
    assert world.caption(world.with_attribute(c, x=0.5)) == "a medium yellow square in the centre on a grey background"
    for a in samples(50, 7):
        words = world.caption(a)
        assert world.size_word(a.size) in words and a.colour in words and a.shape in words
        assert world.position_phrase(a.x, a.y) in words and f"{world.background_word(a.background)} background" in words
        variants = world.caption_variants(a)
        assert variants[0] == words and len(set(variants)) == len(variants) == 4
        for variant in variants:
            for word in (world.size_word(a.size), a.colour, a.shape, world.background_word(a.background)):
                assert word in variant


def test_caption_bins_cover_the_ranges_evenly():
    lo, hi = world.SIZE_RANGE
    assert [world.size_word(lo + (i + 0.5) * (hi - lo) / 5) for i in range(5)] == list(world.SIZE_WORDS)
    assert world.size_word(0.05) == "tiny" and world.size_word(0.9) == "huge"  # edits past the range
    lo, hi = world.BACKGROUND_RANGE
    assert [world.background_word(lo + (i + 0.5) * (hi - lo) / 3) for i in range(3)] == list(world.BACKGROUND_WORDS)


def test_measured_attributes_caption_like_the_truth():
    # Away from bin edges, captioning the measurement gives the true caption (the benchmark's
    # "does the image show what the prompt says" check).
    agree = [world.caption(measure(render(a)).attributes()) == world.caption(a) for a in samples(100, 8)]
    assert np.mean(agree) >= 0.95


def test_dataset_is_deterministic():
    images, captions, attrs = world.make_dataset(20, seed=9)
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8 and len(captions) == len(attrs) == 20
    again = world.make_dataset(20, seed=9)
    assert np.array_equal(images, again[0]) and captions == again[1] and attrs == again[2]
    other = world.make_dataset(20, seed=10)
    assert not np.array_equal(images, other[0])
    assert captions == [world.caption(a) for a in attrs]
    np.testing.assert_array_equal(images[3], world.to_uint8(render(attrs[3])))
    varied = world.make_dataset(20, seed=9, variants=True)
    assert varied[2] == attrs and all(c in world.caption_variants(a) for c, a in zip(varied[1], attrs, strict=True))
    assert world.make_dataset(8, seed=9, size=64)[0].shape == (8, 64, 64, 3)
