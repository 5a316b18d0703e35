"""Fidelity of trained sliders on the toy world: does a slider move its attribute, and only it?

Trains sliders on the toy text-to-image model (``bench/toyworld``) with our trainer, generates a grid
of seeds × α with the same starting noise per seed, reads every attribute back from the pixels
(``world.measure``) and prints, per slider:

* **effect**: slope of the target attribute against α (in units of the attribute's range per unit α)
  and Spearman ρ of α against the per-α mean (and over all images pooled);
* **interference**: mean |change| of every other attribute from the α = 0 image, each over its range
  (size, blueness, background, x, y), also feature by feature, plus the rate of shape changes — at
  matched effect (interpolated in α to where the slider's mean effect equals the prompt edit's) and at
  |α| = 3;
* **structure**: RMS pixel change from the α = 0 image (images in [0, 1]); LPIPS is not reported: no
  installable package ships its weights offline;
* the same for **prompt editing** (the attribute's word put into the prompt, same noise) and for the
  **official objective** (one direction, no preservation concepts, same prompts and η);
* an **oracle** row: renders of the seeds' own attributes with only the attribute changed to the edit's
  high word, measured the same way: what the measurements themselves couple (a bigger shape moves the
  measured border background, a darker background the measured colour), a floor no slider can go under;
* **composition**: the text sliders all at once, each one's slope over its slope alone;
* the trainer's **effect score** (cosine, gain) next to the measured slope;
* the UNet calls and seconds each slider took to train, to compare schedules (``--train-steps``,
  ``--timesteps-per-trajectory``, ``--iterations``) at equal fidelity.

Options for what a user can change: ``--training-prompts`` (``words``: the attribute's words, e.g. "huge" /
"tiny", with a preservation sum; ``captions``: whole captions of other scenes with the words put in, one prompt
entry each), ``--preservation`` (the concepts of the preservation sum: the shapes, the position phrases, the other
attributes' words, or none; η defaults to 6 / their number), ``--start`` (extra rows with the sliders off for the
first fraction of the steps, as the webui's slider start and the official inference's ``start_noise`` do, and
with the edited prompt from that step on, the webui's ``[caption:edited caption:start]``); both options take one
value for every slider or ``name=value`` pairs, the composition runs each slider from its own start, and ``--start
auto`` takes the start our trainer estimates from the model and saves in a slider's file. ``--among size`` trains
the size slider among the run's other text sliders (the trainer's companions, each on at an α drawn per iteration),
to see whether it then keeps its effect when they act too. ``--sliders-dir``
keeps the trained sliders, so a later run re-measures them (other seeds, α or start) without training.

Sliders: ``size`` (tiny → huge), ``colour`` (red → blue, measured as the shape's blue − red), and
``background`` (dark → light) as text sliders with the three shapes as preservation concepts, and
``image_size``, an image slider from rendered small → large pairs.

    python bench/fidelity.py --model bench/toyworld/toy_t2i.safetensors          # the full benchmark
    python bench/fidelity.py --random-model --seeds 2 --alphas=-1,0,1 --iterations 2 --steps 4   # smoke run

The committed ``bench/toyworld/toy_t2i.safetensors`` follows its captions' shape, colour, size and background (the
README says how it was made, and gives the command of each table); the full protocol at 10 DDIM steps takes
about 40 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

if __package__ in (None, ""):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.toyworld import world  # noqa: E402
from bench.toyworld.model import ToyPixelDiffusion  # noqa: E402
from lib_sliders.engine import ActiveSlider, SliderEngine  # noqa: E402
from lib_sliders.lora import LoraModule, SliderNetwork  # noqa: E402
from lib_sliders.presets import DEFAULT_PRESET, PRESETS  # noqa: E402
from lib_sliders.training.backend import ModelBackend  # noqa: E402
from lib_sliders.training.config import ImagePair, TextPrompt, TrainConfig  # noqa: E402
from lib_sliders.training.effect import EffectScore  # noqa: E402
from lib_sliders.training.start_estimate import estimate_start  # noqa: E402
from lib_sliders.training.trainer import START_SEED_OFFSET, SliderTrainer, TrainResult, TrainStats  # noqa: E402

# Continuous features read from an image, and the span each is normalised by (its range in the world).
FEATURES = {"size": 0.4, "blueness": 1.6, "background": 0.8, "x": 0.32, "y": 0.32}
SHAPES = list(world.SHAPES)
# Preservation sets the text sliders can train with (--preservation), by the slider's own attribute: concepts
# whose words go with c+ and c− so that the direction learnt is the same whatever they are.
WORDS = {"size": list(world.SIZE_WORDS), "colour": list(world.COLOURS),
         "background": [f"{w} background" for w in world.BACKGROUND_WORDS]}
PRESERVATION = {
    "shapes": lambda own: SHAPES,
    "positions": lambda own: list(world.POSITION_PHRASES.values()),
    "others": lambda own: [w for attribute, words in WORDS.items() if attribute != own for w in words],
    "none": lambda own: [],
}
DEFAULT_TOTAL_GUIDANCE = 6.0  # η = 2 summed over the three shapes: other sets get η = 6 / |P|


@dataclass(frozen=True)
class SliderSpec:
    name: str
    feature: str  # the feature the slider should move
    prompt: TextPrompt | None  # text sliders
    drop: str  # the caption part generation prompts leave out, so the slider decides it
    edit: tuple[str, str]  # prompt editing: the words for the low and the high end


SLIDERS = [
    SliderSpec("size", "size", TextPrompt(target="", positive="huge", negative="tiny", preservation=SHAPES,
                                          guidance=2.0), "size", ("tiny", "huge")),
    SliderSpec("colour", "blueness", TextPrompt(target="", positive="blue", negative="red", preservation=SHAPES,
                                                guidance=2.0), "colour", ("red", "blue")),
    SliderSpec("background", "background", TextPrompt(target="", positive="light background",
                                                      negative="dark background", preservation=SHAPES,
                                                      guidance=2.0), "background", ("dark", "light")),
    SliderSpec("image_size", "size", None, "size", ("tiny", "huge")),
]


# ------------------------------------------------------------------------------------------ prompts


def caption_without(attrs: world.Attributes, drop: str | tuple[str, ...], word: str | None = None) -> str:
    """The world's caption with the ``drop`` attributes' words left out (one of them may be replaced by ``word``)."""
    drop = (drop,) if isinstance(drop, str) else drop
    size = world.size_word(attrs.size) if "size" not in drop else word
    colour = attrs.colour if "colour" not in drop else word
    background = world.background_word(attrs.background) if "background" not in drop else word
    thing = " ".join(w for w in (size, colour, attrs.shape) if w)
    where = world.position_phrase(attrs.x, attrs.y)
    return f"a {thing} {where}" + (f" on a {background} background" if background else "")


# ------------------------------------------------------------------------------------- measurement


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


# ---------------------------------------------------------------------------------------- sampling


def noise_for(seeds: int, seed: int) -> torch.Tensor:
    return torch.randn(seeds, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def generate(model: ToyPixelDiffusion, prompts: list[str], noise: torch.Tensor, alphas: np.ndarray,
             networks: list, steps: int, guidance: float, start: float | list[float] = 0.0,
             held: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """uint8 images [seeds, alphas, 32, 32, 3]: each seed's prompt and noise at every α (every network at α,
    from the fraction ``start`` of the steps on, the webui's slider start; a list gives each network its own).
    ``held`` maps a network's index to an α per seed that it keeps at every column instead."""
    starts = start if isinstance(start, list) else [start] * len(networks)
    seeds, count = len(prompts), len(alphas)
    rows = [p for p in prompts for _ in range(count)]
    first = noise.repeat_interleave(count, dim=0)
    engine = SliderEngine(model.model.diffusion_model)
    try:
        if networks:
            varied = np.tile(alphas, seeds)
            columns = [np.repeat(held[i], count) if held and i in held else varied for i in range(len(networks))]
            # The sampler's UNet rows are [conditional ×N, unconditional ×N]: the slider acts on both.
            engine.apply([ActiveSlider(net, torch.tensor(np.concatenate([c, c]), dtype=torch.float32), start=begin)
                          for net, c, begin in zip(networks, columns, starts, strict=True)])
        images = model.sample(rows, steps=steps, guidance=guidance, noise=first,
                              on_step=engine.set_step if networks else None)
    finally:
        engine.clear()
    return images.reshape(seeds, count, 32, 32, 3)


# ---------------------------------------------------------------------------------------- training


def train_slider(model, spec: SliderSpec, args, official: bool, pair_dir: str,
                 companions: dict[str, SliderNetwork]) -> tuple[TrainResult, TrainStats]:
    common = dict(name=spec.name, iterations=args.iterations, resolution=32, rank=args.rank, preset=args.preset,
                  max_denoising_steps=args.train_steps, seed=args.seed, train_among=sorted(companions))
    if spec.prompt is not None and not official:
        common["timesteps_per_trajectory"] = args.timesteps_per_trajectory
    if spec.prompt is None:
        from PIL import Image  # the image objective reads files: write the rendered pairs as PNGs

        pairs = world.pairs_for("size", args.pairs, seed=args.seed)
        paths = []
        for i in range(len(pairs)):
            names = [os.path.join(pair_dir, f"{side}_{i}.png") for side in ("before", "after")]
            for path, image in zip(names, (pairs.before[i], pairs.after[i]), strict=True):
                Image.fromarray(world.to_uint8(image)).save(path)
            paths.append(ImagePair(*names))
        config = TrainConfig(mode="image", pairs=paths, scales=args.image_scales, lr=args.image_lr,
                             batch_size=args.image_batch, **common)
    elif official:  # the paper's plain formula as the official code runs it: one direction, no P
        prompt = replace(spec.prompt, preservation=[])
        config = TrainConfig(prompts=[prompt], lr=args.lr, bidirectional=False, **common)
    else:
        config = TrainConfig(prompts=our_prompts(spec, args), lr=args.lr, bidirectional=True, **common)
    trainer = SliderTrainer(ModelBackend(model), config, effect_samples=4, start_samples=0,  # no file to save it in
                            companions=companions)
    result = trainer.train()
    return result, trainer.stats


def our_prompts(spec: SliderSpec, args) -> list[TextPrompt]:
    """Our text slider's prompt entries: the attribute's words with a preservation set (``words``), or whole
    captions of scenes the benchmark does not generate, each with the low and the high word put in (``captions``)."""
    if args.training_prompts[spec.name] == "words":
        concepts = PRESERVATION[args.preservation](spec.drop)
        eta = args.eta if args.eta is not None else DEFAULT_TOTAL_GUIDANCE / max(1, len(concepts))
        return [replace(spec.prompt, preservation=concepts, guidance=eta)]
    rng = np.random.default_rng(args.seed + 101)  # scenes apart from the generated seeds' (seed + 17)
    scenes = [world.sample_attributes(rng) for _ in range(args.captions)]
    eta = args.eta if args.eta is not None else DEFAULT_TOTAL_GUIDANCE
    low, high = spec.edit
    return [TextPrompt(target=caption_without(a, spec.drop), positive=caption_without(a, spec.drop, high),
                       negative=caption_without(a, spec.drop, low), guidance=eta) for a in scenes]


def estimated_start(model, spec: SliderSpec, args) -> float:
    """The start our trainer saves in a text slider's file (same probe, prompts and seed); 0 for an image slider."""
    if spec.prompt is None:
        print(f"  {spec.name}: start 0 (an image slider has no prompts to estimate a start from)")
        return 0.0
    backend = ModelBackend(model)
    estimate = estimate_start(backend.predict_eps, backend.encode_prompts, backend.alphas_cumprod,
                              our_prompts(spec, args), (3, 32, 32),
                              torch.Generator().manual_seed(args.seed + START_SEED_OFFSET))
    print(f"  {spec.name}: {estimate.summary()} (open share by start: "
          f"{', '.join(f'{v:.2f}' for v in estimate.open_share)})", flush=True)
    return estimate.start


def saved_path(args, spec: SliderSpec, label: str) -> str:
    return os.path.join(args.sliders_dir, f"{spec.name}-{label}.safetensors")


def prompt_edit(model, attributes, prompts: list[str], spec: SliderSpec, noise, base: np.ndarray, args,
                start: float) -> Grid:
    """Prompt editing as a grid at "α" −1, 0, 1: the low and the high word put into each seed's prompt, same noise,
    no slider; with ``start``, only from the step where a slider with that start turns on (the webui's
    ``[caption:edited caption:start]``)."""
    first = next((i for i in range(args.steps) if start <= i / args.steps), args.steps)  # SliderEngine's gate
    edits = []
    for word in spec.edit:
        edited = [caption_without(a, spec.drop, word) for a in attributes]
        images = model.sample(prompts, steps=args.steps, guidance=args.guidance, noise=noise, switch=(first, edited))
        edits.append(images[:, None])
    return Grid.of(np.array([-1.0, 0.0, 1.0]), np.concatenate([edits[0], base, edits[1]], 1))


def trained_or_saved(model, spec: SliderSpec, args, official: bool, pair_dir: str, label: str,
                     companions: dict[str, SliderNetwork]):
    """(network, effect score, training stats): trained (among ``companions``), or read back from ``--sliders-dir``
    when a file of that name is there (stats None)."""
    path = saved_path(args, spec, label) if args.sliders_dir else None
    settings = training_settings(args, spec, official) | ({"among": sorted(companions)} if companions else {})
    if path and os.path.exists(path):
        network, score, saved_settings = read_network(path)
        if saved_settings != settings:
            differ = sorted(k for k in settings.keys() | saved_settings.keys()
                            if settings.get(k) != saved_settings.get(k))
            raise SystemExit(f"{path}: trained with other settings ({', '.join(differ)}); "
                             "remove it or choose another --sliders-dir")
        return network, score, None
    result, stats = train_slider(model, spec, args, official, pair_dir, companions)
    if path:
        os.makedirs(args.sliders_dir, exist_ok=True)
        write_network(result.network, result.effect, settings, path)
    return result.network, result.effect, stats


def training_settings(args, spec: SliderSpec, official: bool) -> dict:
    """What decides a trained slider, to tell a stored one made otherwise from the one this run would train."""
    names = ["iterations", "rank", "preset", "train_steps", "seed"]
    if spec.prompt is None:
        names += ["image_lr", "image_batch", "image_scales", "pairs"]
    else:
        names += ["lr"]
        if not official:
            names += ["timesteps_per_trajectory", "training_prompts", "preservation", "eta", "captions"]
    values = {name: getattr(args, name) for name in names}
    return {name: value[spec.name] if isinstance(value, dict) else value for name, value in values.items()}


def write_network(network: SliderNetwork, score: EffectScore | None, settings: dict, path: str) -> None:
    """The bench's own store, keyed by the toy UNet's module paths in fp32 (the toy UNet has no kohya key
    layout), so a re-measurement sees the very weights the first run measured."""
    tensors = {}
    for module_path, module in network.unet.items():
        tensors[f"{module_path}.down"] = module.down.detach().float().contiguous()
        tensors[f"{module_path}.up"] = module.up.detach().float().contiguous()
        tensors[f"{module_path}.alpha"] = torch.tensor(float(module.alpha))
    metadata = {"name": network.name, "arch": ",".join(sorted(network.arch)),
                "effect": json.dumps(score.to_dict() if score else None), "settings": json.dumps(settings)}
    save_file(tensors, path + ".partial", metadata=metadata)
    os.replace(path + ".partial", path)  # a run stopped while writing leaves no file that looks complete


def read_network(path: str) -> tuple[SliderNetwork, EffectScore | None, dict]:
    with safe_open(path, "pt") as file:
        metadata = file.metadata()
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    paths = sorted({key.rsplit(".", 1)[0] for key in tensors})
    unet = {p: LoraModule(tensors[f"{p}.down"], tensors[f"{p}.up"], float(tensors[f"{p}.alpha"])) for p in paths}
    if "settings" not in metadata:
        raise SystemExit(f"{path}: no training settings stored (written by an older fidelity.py): delete it, or "
                         "choose another --sliders-dir")
    stored = json.loads(metadata["effect"])
    score = EffectScore(**{k: v for k, v in stored.items() if k != "does_nothing"}) if stored else None
    arch = frozenset(a for a in metadata["arch"].split(",") if a)
    return SliderNetwork(metadata["name"], unet=unet, arch=arch, source=path), score, json.loads(metadata["settings"])


# ------------------------------------------------------------------------------------------- report


def fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="trained toy model weights (.safetensors)")
    source.add_argument("--random-model", action="store_true", help="untrained weights: a smoke run of the code")
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--alphas", default="-3,-2,-1,0,1,2,3")
    parser.add_argument("--iterations", type=int, default=300, help="training iterations per slider")
    parser.add_argument("--timesteps-per-trajectory", type=int, default=1,
                        help="training points per denoising trajectory, ours (1 = the official loop's one)")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET, help="layers the sliders train")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--image-lr", type=float, default=1e-4)
    parser.add_argument("--image-batch", type=int, default=1, help="batch size of the image slider")
    parser.add_argument("--image-scales", default="1",
                        help="the image slider's scales s (it trains ±s on each pair's after / before image)")
    parser.add_argument("--pairs", type=int, default=16, help="before/after pairs of the image slider")
    parser.add_argument("--train-steps", type=int, default=20, help="DDIM schedule of the training loop")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps when generating")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--sliders", default=",".join(s.name for s in SLIDERS))
    parser.add_argument("--preservation", choices=sorted(PRESERVATION), default="shapes",
                        help="preservation concepts of our text sliders")
    parser.add_argument("--training-prompts", default="words",
                        help="our text sliders' prompts: 'words' (the attribute's words with the preservation set) or "
                        "'captions' (--captions whole captions with the words put in); per slider as "
                        "'size=captions,colour=words' (the rest: words)")
    parser.add_argument("--captions", type=int, default=32, help="how many captions --training-prompts captions trains on")
    parser.add_argument("--eta", type=float, default=None,
                        help="guidance η of our text sliders (default: 6 / number of preservation concepts, "
                        "i.e. 2 with the three shapes)")
    parser.add_argument("--start", default="0",
                        help="also generate with our sliders off for this fraction of the steps (the webui's "
                        "slider start), as an extra row; 'auto': the start the trainer estimates from the model; "
                        "per slider as 'colour=0.6,size=auto' (the rest: 0). The composition runs each slider "
                        "from its start")
    parser.add_argument("--match", choices=("interpolate", "nearest"), default="interpolate",
                        help="matched effect: interpolated in α, or the α of the grid nearest the edit's effect")
    parser.add_argument("--sliders-dir", default=None,
                        help="write the trained sliders here, and read those already there instead of training "
                        "them (<slider>-<method>.safetensors): re-measure without retraining")
    parser.add_argument("--among", default="",
                        help="our text sliders (comma-separated) to train among the other text sliders of the run, "
                        "each of those on at an α drawn per iteration from -2…2 (they are trained first)")
    parser.add_argument("--no-official", action="store_true", help="skip the official-objective baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    names = [s.name for s in SLIDERS]
    try:
        args.training_prompts = per_slider(args.training_prompts, training_prompts_kind, names, "words")
        args.start = per_slider(args.start, start_fraction, names, 0.0)
    except ValueError as error:
        parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    alphas = np.array([float(a) for a in args.alphas.split(",")])
    args.image_scales = [float(s) for s in args.image_scales.split(",")]
    if not (alphas == 0).any():
        parser.error("--alphas must include 0 (the reference image)")
    args.among = [name for name in args.among.split(",") if name]
    unknown = sorted(set(args.among) - {s.name for s in SLIDERS if s.prompt is not None})
    if unknown:
        parser.error(f"--among: not a text slider: {', '.join(unknown)}")
    # Sliders trained among the others come after them.
    chosen = sorted((s for s in SLIDERS if s.name in args.sliders.split(",")), key=lambda s: s.name in args.among)

    began = time.time()
    model = (ToyPixelDiffusion() if args.random_model else ToyPixelDiffusion.from_file(args.model)).eval()
    model.requires_grad_(False)
    rng = np.random.default_rng(args.seed + 17)
    attributes = [world.sample_attributes(rng) for _ in range(args.seeds)]
    noise = noise_for(args.seeds, args.seed + 29)
    print(f"toy model: {'random weights (smoke run)' if args.random_model else args.model}; {args.seeds} seeds; "
          f"α {list(alphas)}; {args.iterations} iterations per slider (ours: {args.timesteps_per_trajectory} "
          f"training points per trajectory); {args.steps} DDIM steps, CFG {args.guidance}")

    rows, trained = [], {}
    with tempfile.TemporaryDirectory() as pair_dir:
        for spec in chosen:
            prompts = [caption_without(a, spec.drop) for a in attributes]
            if args.start[spec.name] is None:
                args.start[spec.name] = estimated_start(model, spec, args)
            variants = [("ours", False)] + ([] if args.no_official or spec.prompt is None else [("official", True)])
            base = generate(model, prompts, noise, np.zeros(1), [], args.steps, args.guidance)
            edit = None
            for start in [0.0] + ([args.start[spec.name]] if args.start[spec.name] else []):
                edit_grid = prompt_edit(model, attributes, prompts, spec, noise, base, args, start)
                change = edit_grid.change_at(spec.feature, 2)
                edit = edit or change  # the targets are against the plain edit: the word in the prompt throughout
                rows.append((spec.name, "prompt edit" + (f" s{start:g}" if start else ""),
                             {"slope": change["effect"], "rho_means": math.nan, "rho_pooled": math.nan,
                              "found": edit_grid.effect(spec.feature)["found"]}, change, change, None))
            floor = oracle(attributes, spec)
            rows.append((spec.name, "oracle", {"slope": floor["effect"], "rho_means": math.nan, "rho_pooled": math.nan,
                                               "found": 1.0}, floor, floor, None))
            floor = oracle_at(attributes, spec, edit["effect"])
            rows.append((spec.name, "oracle @m", {"slope": floor["effect"], "rho_means": math.nan,
                                                  "rho_pooled": math.nan, "found": 1.0}, floor, floor, None))
            for label, official in variants:
                training_began = time.time()
                # Companions: the run's text sliders trained on their own (so already trained, see ``chosen``).
                among = ({o.name: trained[o.name] for o in chosen if o.prompt is not None and o.name not in args.among}
                         if label == "ours" and spec.name in args.among else {})
                network, score, stats = trained_or_saved(model, spec, args, official, pair_dir, label, among)
                training_seconds = time.time() - training_began
                if label == "ours":
                    trained[spec.name] = network
                starts = [0.0] + ([args.start[spec.name]] if args.start[spec.name] and label == "ours" else [])
                for start in starts:
                    grid = Grid.of(alphas, generate(model, prompts, noise, alphas, [network], args.steps,
                                                    args.guidance, start))
                    effect = grid.effect(spec.feature)
                    top = int(np.argmax(np.abs(alphas)))
                    rows.append((spec.name, ours_label(start) if label == "ours" else label, effect,
                                 matched_change(grid, spec.feature, edit["effect"], args.match),
                                 grid.change_at(spec.feature, top), score))
                how = (f"trained in {training_seconds:.0f} s ({stats.unet_calls} UNet calls, {stats.unet_rows} rows)"
                       if stats else "read from " + saved_path(args, spec, label))
                print(f"  {spec.name} ({label}) {how}, done at {time.time() - began:.0f} s", flush=True)

        composition = []
        text = [s for s in chosen if s.prompt is not None and s.name in trained]
        if len(text) > 1:
            prompts = [caption_without(a, tuple(s.drop for s in text)) for a in attributes]
            starts = [args.start[s.name] for s in text]
            networks = [trained[s.name] for s in text]
            both = Grid.of(alphas, generate(model, prompts, noise, alphas, networks, args.steps, args.guidance,
                                            starts))
            alone = {spec.name: Grid.of(alphas, generate(model, prompts, noise, alphas, [trained[spec.name]],
                                                         args.steps, args.guidance, start))
                     for spec, start in zip(text, starts, strict=True)}
            # The others held at an α per seed drawn from the grid's non-zero ones, the same at every column:
            # whether a slider's own effect survives the others being on, apart from what they add to its feature.
            nonzero = alphas[alphas != 0]
            holds = np.random.default_rng(args.seed + 41).choice(nonzero, size=(len(text), args.seeds))
            for i, spec in enumerate(text):
                held = {j: holds[j] for j in range(len(text)) if j != i}
                with_others = Grid.of(alphas, generate(model, prompts, noise, alphas, networks, args.steps,
                                                       args.guidance, starts, held))
                composition.append(Composed(
                    spec.name, starts[i], together=both.effect(spec.feature)["slope"],
                    alone=alone[spec.name].effect(spec.feature)["slope"],
                    others_alone=sum(alone[o.name].effect(spec.feature)["slope"] for o in text if o is not spec),
                    others_held=with_others.effect(spec.feature)["slope"]))

    print_report(rows, composition, alphas, args.match)
    print(f"\nfinished in {time.time() - began:.0f} s")


@dataclass(frozen=True)
class Composed:
    """One text slider's slope on its own feature alone and among the others."""

    name: str
    start: float
    together: float  # all sliders at the same α
    alone: float
    others_alone: float  # the other sliders' slopes on this feature, each alone
    others_held: float  # this slider varied, the others held at a fixed non-zero α per seed

    def ratio(self, slope: float) -> float:
        return slope / self.alone if np.isfinite(self.alone) and self.alone != 0 else math.nan


def matched_alpha(matched: dict) -> str:
    if "alpha" not in matched:
        return "–"
    return f"{matched['alpha']:.2f}" if matched["reached"] else f">{matched['alpha']:g}"


def print_report(rows, composition, alphas, match: str = "interpolate") -> None:
    header = (f"{'slider':<11}{'method':<17}{'found':>6}{'slope/α':>9}{'ρ means':>9}{'ρ pooled':>9}"
              f"{'α@m':>6}{'effect@m':>10}{'interf@m':>10}{'shape@m':>9}{'struct@m':>10}{'interf@max':>11}"
              f"{'struct@max':>11}"
              f"{'score cos':>10}{'score gain':>11}")
    print("\n" + header + "\n" + "-" * len(header))
    for name, label, effect, matched, top, score in rows:
        print(f"{name:<11}{label:<17}{fmt(effect['found'], 2):>6}{fmt(effect['slope']):>9}{fmt(effect['rho_means']):>9}"
              f"{fmt(effect['rho_pooled']):>9}{matched_alpha(matched):>6}{fmt(matched['effect']):>10}"
              f"{fmt(matched['interference']):>10}"
              f"{fmt(matched['shape_change'], 2):>9}{fmt(matched['structure']):>10}{fmt(top['interference']):>11}"
              f"{fmt(top['structure']):>11}{fmt(score.cosine if score else math.nan):>10}"
              f"{fmt(score.gain if score else math.nan):>11}")
    how = (f"interpolated in α between the two α that bracket it; '>{max(alphas):g}': never reached, given at the "
           "largest α"
           if match == "interpolate" else "at the α of the grid whose mean effect is nearest")
    print("slope/α: change of the target feature per unit α, over its range; @m: at matched effect, where the mean "
          f"effect reaches the prompt edit's ({how}) (prompt edit: no word → high word; its slope column is that "
          "edit's effect; oracle: a render → the same render with the high word's value); "
          f"@max: at |α| = {max(abs(alphas)):g}; "
          "interference: mean |change| of the other features over their ranges; shape: rate of shape changes; "
          "struct: RMS pixel change from α = 0. LPIPS: not available offline.")
    print("\ninterference by feature @m (mean |change| over the feature's range; the slider's own feature in brackets)")
    print(f"{'slider':<11}{'method':<17}" + "".join(f"{f:>12}" for f in FEATURES))
    for name, label, _, matched, _, _ in rows:
        target = next(s.feature for s in SLIDERS if s.name == name)
        cells = [(f"[{fmt(matched['by_feature'][f])}]" if f == target else fmt(matched["by_feature"][f]))
                 for f in FEATURES]
        print(f"{name:<11}{label:<17}" + "".join(f"{c:>12}" for c in cells))
    ratios = {}
    if composition:
        print("\ncomposition (the text sliders at once, each from its start; slopes of the slider's own feature)")
        print(f"  {'slider':<11}{'alone':>8}{'together':>10}{'ratio':>7}{'alone + others alone':>22}"
              f"{'others held':>13}{'ratio':>7}")
        for c in composition:
            ratio, held = c.ratio(c.together), c.ratio(c.others_held)
            ratios[ours_label(c.start)] = ratios.get(ours_label(c.start), {}) | {c.name: ratio}
            print(f"  {c.name:<11}{fmt(c.alone):>8}{fmt(c.together):>10}{fmt(ratio, 2):>7}"
                  f"{fmt(c.alone + c.others_alone):>22}{fmt(c.others_held):>13}{fmt(held, 2):>7}"
                  + (f"  (start {c.start:g})" if c.start else ""))
        print("together: all at the same α; alone + others alone: what together would be if the sliders' effects on "
              "this feature just added up; others held: this slider over the grid with the others at a non-zero α "
              "per seed, fixed across the grid (its own effect among the others, without what they add)")
    print("\ntargets (ours, and ours with the slider start): ρ ≥ 0.95; interference ≤ 1/3 and structure ≤ 1/2 of "
          "prompt editing's (the word in the prompt throughout) at matched effect; composition within 20 %")
    edits = {name: matched for name, label, _, matched, _, _ in rows if label == "prompt edit"}
    for name, label, effect, ours, _, _ in rows:
        if not label.startswith("ours") or name not in edits:
            continue
        checks = {"ρ": at_least(effect["rho_means"], 0.95),
                  "interference": fraction_of(ours["interference"], edits[name]["interference"], 1 / 3),
                  "structure": fraction_of(ours["structure"], edits[name]["structure"], 1 / 2)}
        if name in ratios.get(label, {}):
            checks["composition"] = at_least(-abs(ratios[label][name] - 1), -0.2)
        print(f"  {name:<11}{label:<17}" + ", ".join(f"{k} {verdict}" for k, verdict in checks.items()))
    floors = {name: matched for name, label, _, matched, _, _ in rows if label == "oracle @m"}
    for name, floor in floors.items():
        if name in edits and np.isfinite(floor["structure"]) and edits[name]["structure"] > 0:
            share = floor["structure"] / edits[name]["structure"]
            print(f"  {name:<11}structure floor: a perfect edit of the same effect (oracle @m) changes {share:.2f}× "
                  f"the prompt edit's pixels" + (" — the ≤ 1/2 target is below it" if share > 0.5 else ""))


def ours_label(start: float) -> str:
    return "ours" + (f" s{start:g}" if start else "")


def per_slider(text: str, parse, names: list[str], default):
    """A value for every slider from '<value>' (all of them) or 'name=value,…' (the rest: ``default``)."""
    if "=" not in text:
        value = parse(text)
        return dict.fromkeys(names, value)
    values = dict.fromkeys(names, default)
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in values:
            raise ValueError(f"unknown slider {name.strip()!r} in {text!r} (sliders: {', '.join(names)})")
        values[name.strip()] = parse(value.strip())
    return values


def training_prompts_kind(text: str) -> str:
    if text not in ("words", "captions"):
        raise ValueError(f"training prompts must be 'words' or 'captions', not {text!r}")
    return text


def start_fraction(text: str) -> float | None:
    """A start as a fraction of the steps, or None for 'auto' (the trainer's estimate from the model)."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"a start must be a number, not {text!r}") from None
    if not 0 <= value < 1:
        raise ValueError(f"a start must be a fraction of the steps in [0, 1), not {text!r}")
    return value


def at_least(value: float, bound: float) -> str:
    return "not measured" if not np.isfinite(value) else "met" if value >= bound else "NOT met"


def fraction_of(ours: float, edit: float, share: float) -> str:
    """'met' when ``ours`` ≤ share × the edit's; a prompt edit that changes nothing leaves nothing to compare with
    (a random model's, whose images have no shape to measure)."""
    if not (np.isfinite(ours) and np.isfinite(edit)) or edit <= 0:
        return "not measured (the prompt edit changes nothing)"
    return "met" if ours <= share * edit else "NOT met"


if __name__ == "__main__":
    main()
