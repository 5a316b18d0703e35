"""The benchmarks run end to end on the tests' tiny models and print their tables (numbers, not timings, checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
NUMBER = r"\d+(?:\.\d+)?"


def run_bench(script: str, *args: str) -> str:
    # One thread: tiny models gain nothing from more, and oversubscribed OpenMP threads on a busy CI
    # runner can make each tiny forward a hundred times slower.
    result = subprocess.run([sys.executable, os.path.join(BENCH_DIR, script), *args, "--threads", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{script} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_train_speed_tiny():
    out = run_bench("train_speed.py", "--size", "tiny", "--iterations", "3", "--models", "sd15,sdxl",
                    "--device", "cpu")
    assert re.search(r"^model\s+size\s+px\s+timed\s+mean k\s+calls/it\s+rows/it\s+s/it\s+s/it@E\[k\]", out, re.M), out
    for model in ("sd15", "sdxl"):
        row = re.search(rf"^{model}\s+tiny\s+64\s+2\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s", out, re.M)
        assert row, out
        k, calls, rows, seconds = map(float, row.groups())
        # Our loop: k CFG denoising calls (batch 2), one frozen call (3 rows), one trainable call (2 rows).
        assert 1 <= k <= 49 and calls == pytest.approx(k + 2) and rows == pytest.approx(2 * k + 5)
        assert seconds > 0


def test_apply_overhead_tiny():
    out = run_bench("apply_overhead.py", "--size", "tiny", "--counts", "0,1,2", "--repeats", "1", "--device", "cpu")
    assert re.search(r"^path\s+sliders\s+ms/forward\s+overhead$", out, re.M), out
    assert re.search(rf"^none\s+0\s+{NUMBER}\s*$", out, re.M), out
    assert re.search(rf"^hooks, per-row α\s+2\s+{NUMBER}\s+-?{NUMBER}%$", out, re.M), out
    assert re.search(rf"^merge \+ restore, 5 slider\(s\)\s+{NUMBER}$", out, re.M), out


def test_fidelity_runs_end_to_end_on_an_untrained_toy_model():
    # Code paths only (training, grids, prompt edits, official baseline, composition, table): the numbers of an
    # untrained model mean nothing.
    out = run_bench("fidelity.py", "--random-model", "--sliders", "size,colour,image_size", "--seeds", "2",
                    "--alphas=-1,0,1", "--iterations", "1", "--steps", "2", "--train-steps", "2", "--pairs", "2",
                    "--start", "size=0.5,colour=0.5,image_size=auto", "--among", "size",
                    "--among-alphas=-3,0,3", "--ideal")
    assert re.search(r"^slider\s+method\s+found\s+slope/α", out, re.M), out
    # An image slider's start is probed with the slider it became (at ±its scale), after training.
    assert re.search(r"^  image_size: recommended start .* between the slider at ±1 is still open", out, re.M), out
    # The size slider trains among the colour slider, so after it.
    assert out.index("colour (ours) trained") < out.index("size (ours) trained"), out
    for slider, method in [("size", "prompt edit"), ("size", "oracle"), ("size", "ours"), ("size", "official"),
                           ("size", "ours s0.5"), ("size", "prompt edit s0.5"), ("colour", "oracle"),
                           ("colour", "oracle @m"),
                           ("colour", "ours"), ("image_size", "ours"), ("size", "ideal slider"),
                           ("size", "ideal slider s0.5"), ("colour", "ideal slider s0.5")]:
        assert re.search(rf"^{slider}\s+{method}\s+{NUMBER}\s", out, re.M), (slider, method, out)
    # The oracle is measured on renders, so it means something even here: both shapes found, both grew (or
    # turned blue).
    for slider in ("size", "colour"):
        found, effect = re.search(rf"^{slider}\s+oracle\s+({NUMBER})\s+({NUMBER})\s", out, re.M).groups()
        assert float(found) == 1.0 and float(effect) > 0.05, (slider, out)
    assert re.search(rf"^size\s+oracle\s+\[{NUMBER}\]\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out, re.M), out
    # Image sliders have no official objective here, and no text target to apply.
    assert not re.search(r"^image_size\s+(official|ideal)", out, re.M)
    # The composition runs each slider from its start (here 0.5 for all).
    # alone, together, ratio, alone + others alone, others held, ratio.
    for slider in ("size", "colour"):
        assert re.search(rf"^  {slider}" + r"(\s+\S+){6}  \(start 0.5\)$", out, re.M), (slider, out)


def test_fidelity_compares_at_the_alpha_where_the_effect_matches_the_prompt_edits():
    import numpy as np

    from bench.fidelity_lib.measure import FEATURES, Grid

    alphas = np.array([-1.0, 0.0, 1.0, 2.0])
    seeds = 2
    # Size (range 0.4) grows 0.1 per unit α: effects 0.25 per α; x drifts 0.032 per α (0.1 of its range).
    values = {f: np.full((seeds, len(alphas)), 0.5) for f in FEATURES}
    values["size"] = 0.3 + 0.1 * np.tile(alphas, (seeds, 1))
    values["x"] = 0.5 + 0.032 * np.tile(alphas, (seeds, 1))
    images = np.zeros((seeds, len(alphas), 32, 32, 3), dtype=np.float32)
    images[:, :, 0, 0, 0] = np.tile(alphas, (seeds, 1))  # pixel change grows with |α|
    grid = Grid(alphas, values, np.full((seeds, len(alphas)), "circle", dtype=object), images)

    matched = grid.at_effect("size", 0.375)  # between α = 1 (0.25) and α = 2 (0.5): α = 1.5
    assert matched["reached"] and matched["alpha"] == pytest.approx(1.5)
    assert matched["effect"] == pytest.approx(0.375)
    assert matched["by_feature"]["x"] == pytest.approx(0.15)  # 1.5 × 0.1
    assert matched["interference"] == pytest.approx(0.15 / 4)  # x among the four other features
    at_one, at_two = grid.change_at("size", 2)["structure"], grid.change_at("size", 3)["structure"]
    assert matched["structure"] == pytest.approx((at_one + at_two) / 2)
    assert grid.at_effect("size", 0.1)["alpha"] == pytest.approx(0.4)  # from α = 0, where nothing has changed
    beyond = grid.at_effect("size", 0.9)  # never reached: reported at the largest α
    assert not beyond["reached"] and beyond["alpha"] == 2.0 and beyond["effect"] == pytest.approx(0.5)


@pytest.mark.parametrize("slider", ["size", "colour", "background"])
def test_the_oracle_at_matched_effect_moves_only_its_attribute_as_far_as_asked(slider):
    import numpy as np

    from bench.fidelity_lib.measure import oracle, oracle_at
    from bench.fidelity_lib.sliders import SLIDERS
    from bench.toyworld import world

    spec = next(s for s in SLIDERS if s.name == slider)
    attributes = [world.sample_attributes(np.random.default_rng(seed)) for seed in range(16)]
    full = oracle(attributes, spec)
    smaller, larger = (oracle_at(attributes, spec, share * full["effect"]) for share in (0.5, 1.2))
    for floor, share in ((smaller, 0.5), (larger, 1.2)):
        assert floor["effect"] == pytest.approx(share * full["effect"], rel=0.05), (share, floor, full)
        assert floor["interference"] < 0.03, floor  # renders: only the measurement's own coupling
    assert 0 < smaller["structure"] < full["structure"] < larger["structure"]
    assert smaller["alpha"] < 1 < larger["alpha"]  # the fraction of the way to the edit's word


def test_fidelity_saves_its_sliders_and_remeasures_them_without_training(tmp_path):
    # Captions as training prompts too; the second run reads the first run's files and must report the same slider.
    common = ["--random-model", "--sliders", "size", "--seeds", "2", "--alphas=-1,0,1", "--iterations", "1",
              "--steps", "2", "--train-steps", "2", "--no-official", "--training-prompts", "captions", "--captions",
              "2", "--sliders-dir", str(tmp_path)]
    first = run_bench("fidelity.py", *common)
    assert "size (ours) trained in" in first and (tmp_path / "size-ours.safetensors").is_file(), first
    second = run_bench("fidelity.py", *common)
    assert f"size (ours) read from {tmp_path / 'size-ours.safetensors'}" in second, second
    row = re.compile(r"^size\s+ours\s+.*$", re.M)
    assert row.search(first).group(0) == row.search(second).group(0), (first, second)
    # A stored slider made with other settings is refused, naming the file and what differs.
    other = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "fidelity.py"), *common, "--captions", "3",
                            "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "size-ours.safetensors: trained with other settings (captions)" in other.stderr
    # Trained from its start (--train-from-start) it is another slider; from 0 it would be the same one.
    from_start = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "fidelity.py"), *common, "--start", "0.5",
                                 "--train-from-start", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert from_start.returncode != 0 and "trained with other settings (trained_from)" in from_start.stderr


def test_fidelity_options_per_slider():
    from bench.fidelity import per_slider, start_fraction, training_prompts_kind

    names = ["size", "colour", "background"]
    assert per_slider("0.3", start_fraction, names, 0.0) == {"size": 0.3, "colour": 0.3, "background": 0.3}
    assert per_slider("colour=0.6,size=auto", start_fraction, names, 0.0) == {"size": None, "colour": 0.6,
                                                                               "background": 0.0}
    assert per_slider("size=captions", training_prompts_kind, names, "words")["size"] == "captions"
    for text, parse, problem in [("hue=0.5", start_fraction, "unknown slider 'hue'"),
                                 ("colour=1", start_fraction, "fraction of the steps"),
                                 ("size=sentences", training_prompts_kind, "'words' or 'captions'")]:
        with pytest.raises(ValueError, match=problem):
            per_slider(text, parse, names, 0.0)


def test_fidelity_verdicts_need_a_prompt_edit_that_changes_something():
    import math

    from bench.fidelity_lib.report import at_least, fraction_of

    assert fraction_of(0.0, 0.0, 1 / 3).startswith("not measured")  # a random model: no shape, nothing changes
    assert fraction_of(math.nan, 0.3, 1 / 3).startswith("not measured")
    assert fraction_of(0.09, 0.3, 1 / 3) == "met" and fraction_of(0.11, 0.3, 1 / 3) == "NOT met"
    assert at_least(0.96, 0.95) == "met" and at_least(0.9, 0.95) == "NOT met"
    assert at_least(math.nan, 0.95) == "not measured"


def test_the_ideal_slider_applies_the_target_only_from_its_start_and_only_at_non_zero_alpha():
    # The training target applied while sampling: at α 0, or before the start, the plain sample bit for bit.
    import numpy as np
    import torch

    from bench.fidelity import generate, parse_args, target_applied
    from bench.fidelity_lib.sliders import SLIDERS, caption_without
    from bench.toyworld import world
    from bench.toyworld.model import ToyPixelDiffusion

    # The committed toy model: a random one's images are saturated, and a change of ε seldom shows in them.
    model = ToyPixelDiffusion.from_file(os.path.join(BENCH_DIR, "toyworld", "toy_t2i.safetensors"))
    model.eval().requires_grad_(False)
    spec = next(s for s in SLIDERS if s.name == "size")
    attributes = [world.sample_attributes(np.random.default_rng(seed)) for seed in range(2)]
    prompts = [caption_without(a, spec.drop) for a in attributes]
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for kind in ("words", "captions"):
        args = parse_args(["--random-model", "--alphas=-3,0,3", "--steps", "4", "--training-prompts", kind])
        base = generate(model, prompts, noise, np.zeros(1), [], args.steps, args.guidance)[:, 0] / np.float32(255)
        grid = target_applied(model, attributes, prompts, spec, noise, args, start=0.0)
        applied = grid.images
        assert np.array_equal(applied[:, 1], base), kind
        assert not np.array_equal(applied[:, 0], base) and not np.array_equal(applied[:, 2], base), kind
        # From the last step only: the images differ less than from the first.
        late = target_applied(model, attributes, prompts, spec, noise, args, start=0.75).images
        assert np.array_equal(late[:, 1], base)
        change = [np.abs(images[:, 2] - base).mean() for images in (applied, late)]
        assert 0 < change[1] < change[0], (kind, change)
        # Larger shapes at α 3 than at 0 (at −3 they shrink out of sight): the target is the size direction.
        assert np.nanmean(grid.values["size"][:, 2]) > np.nanmean(grid.values["size"][:, 1]), kind
