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
* with ``--ideal``, the **training target applied exactly**: no slider, the text slider's target added to the guided
  ε while sampling, what a slider that fitted it at every x would do (does the training or the target leave the
  interference?);
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
auto`` takes the start our trainer estimates from the model and saves in a slider's file; our sliders train from
that start with ``--train-from-start`` (the trainer's ``train_from_start``). ``--among size`` trains
the size slider among the run's other text sliders (the trainer's companions, each on at an α drawn per iteration),
to see whether it then keeps its effect when they act too. ``--sliders-dir``
keeps the trained sliders, so a later run re-measures them (other seeds, α or start) without training.

This file trains and generates; ``bench/fidelity_lib`` holds the sliders (``sliders``), the measurement of a
grid (``measure``), the store of ``--sliders-dir`` (``store``) and the printed report (``report``).

Sliders: ``size`` (tiny → huge), ``colour`` (red → blue, measured as the shape's blue − red), and
``background`` (dark → light) as text sliders with the three shapes as preservation concepts, and
``image_size``, an image slider from rendered small → large pairs.

    python bench/fidelity.py --model bench/toyworld/toy_t2i.safetensors          # the full benchmark
    python bench/fidelity.py --random-model --seeds 2 --alphas=-1,0,1 --iterations 2 --steps 4   # smoke run

The committed ``bench/toyworld/toy_t2i.safetensors`` follows its captions' shape, colour, size and background (the
docs/fidelity.md says how it was made, and gives the command of each table); the full protocol at 10 DDIM steps takes
about 40 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.fidelity_lib.measure import Grid, matched_change, oracle, oracle_at  # noqa: E402
from bench.fidelity_lib.report import Composed, ours_label, print_report  # noqa: E402
from bench.fidelity_lib.sliders import (  # noqa: E402
    DEFAULT_TOTAL_GUIDANCE,
    PRESERVATION,
    SLIDERS,
    SliderSpec,
    caption_without,
)
from bench.fidelity_lib.store import read_network, write_network  # noqa: E402
from bench.toyworld import world  # noqa: E402
from bench.toyworld.model import ToyPixelDiffusion  # noqa: E402
from lib_sliders.apply.engine import ActiveSlider, SliderEngine  # noqa: E402
from lib_sliders.files.lora import SliderNetwork  # noqa: E402
from lib_sliders.prompt.presets import DEFAULT_PRESET, PRESETS  # noqa: E402
from lib_sliders.training.backend import ModelBackend  # noqa: E402
from lib_sliders.training.config import ImagePair, TextPrompt, TrainConfig  # noqa: E402
from lib_sliders.training.schedule import first_step_on  # noqa: E402
from lib_sliders.training.start_estimate import StartEstimate, estimate_slider_start, estimate_start  # noqa: E402
from lib_sliders.training.text_objective import with_concept  # noqa: E402
from lib_sliders.training.trained_slider import TrainResult  # noqa: E402
from lib_sliders.training.trainer import START_SEED_OFFSET, SliderTrainer  # noqa: E402
from lib_sliders.training.training_run import TrainStats  # noqa: E402

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
                  max_denoising_steps=args.train_steps, seed=args.seed, train_among=sorted(companions),
                  among_alphas=args.among_alphas, default_start=trained_from(args, spec, official),
                  train_from_start=args.train_from_start and not official)
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


def trained_from(args, spec: SliderSpec, official: bool) -> float:
    """The start ours trains from with ``--train-from-start`` (the trainer's ``train_from_start``): the one it is
    generated with, when known before training (an image slider's ``auto`` is probed after); else 0, as for the
    official objective, which trains every step."""
    if official or not args.train_from_start:
        return 0.0
    return args.start[spec.name] or 0.0


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
    """The start our trainer saves in a text slider's file (same probe, prompts and seed)."""
    backend = ModelBackend(model)
    estimate = estimate_start(backend.predict_eps, backend.encode_prompts, backend.alphas_cumprod,
                              our_prompts(spec, args), (3, 32, 32),
                              torch.Generator().manual_seed(args.seed + START_SEED_OFFSET))
    return reported(spec, estimate)


def estimated_slider_start(model, spec: SliderSpec, network: SliderNetwork, args) -> float:
    """The start our trainer saves in an image slider's file: the same probe with the trained slider at ±scale."""
    backend = ModelBackend(model)
    engine = SliderEngine(model.model.diffusion_model)
    engine.apply([ActiveSlider(network, 0.0)])

    def predict(x_t, t, cond, alphas):
        engine.set_alphas([alphas])
        return backend.predict_eps(x_t, t, cond)

    try:
        estimate = estimate_slider_start(predict, backend.encode_prompts, backend.alphas_cumprod,
                                         TrainConfig.image_prompt, max(args.image_scales), (3, 32, 32),
                                         torch.Generator().manual_seed(args.seed + START_SEED_OFFSET))
    finally:
        engine.clear()
    return reported(spec, estimate)


def reported(spec: SliderSpec, estimate: StartEstimate) -> float:
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
    first = first_step_on(start, args.steps)  # where SliderEngine's gate opens
    edits = []
    for word in spec.edit:
        edited = [caption_without(a, spec.drop, word) for a in attributes]
        images = model.sample(prompts, steps=args.steps, guidance=args.guidance, noise=noise, switch=(first, edited))
        edits.append(images[:, None])
    return Grid.of(np.array([-1.0, 0.0, 1.0]), np.concatenate([edits[0], base, edits[1]], 1))


def target_applied(model, attributes, prompts: list[str], spec: SliderSpec, noise, args, start: float) -> Grid:
    """Our objective's target applied while sampling, with no slider: from the step a slider with ``start`` turns on,
    the guided ε gains α · η Σ_p [ε(x, c+ ⊕ p) − ε(x, c− ⊕ p)], the change our slider is trained to make (for
    ``captions``, the image's own caption with the low and the high word). A slider that fitted its target exactly
    would do this, so it tells what the objective and the model allow from what the training leaves."""
    alphas, count = args.alphas, len(args.alphas)
    if args.training_prompts[spec.name] == "words":
        (entry,) = our_prompts(spec, args)
        concepts = list(entry.preservation) or [None]
        pairs = [[(with_concept(entry.positive, p), with_concept(entry.negative, p)) for p in concepts]] * len(prompts)
        eta = entry.guidance * (1.0 if entry.action == "enhance" else -1.0)  # the trainer's sign
    else:
        low, high = spec.edit
        pairs = [[(caption_without(a, spec.drop, high), caption_without(a, spec.drop, low))] for a in attributes]
        eta = args.eta if args.eta is not None else DEFAULT_TOTAL_GUIDANCE
    rows = [pair for pair in pairs for _ in range(count)]  # seed-major, as ``generate`` lays out the grid
    encoded = [(model.get_learned_conditioning([r[i][0] for r in rows]),
                model.get_learned_conditioning([r[i][1] for r in rows])) for i in range(len(rows[0]))]
    scale = eta * torch.tensor(np.tile(alphas, len(prompts)), dtype=torch.float32).view(-1, 1, 1, 1)
    first = first_step_on(start, args.steps)

    def adjust(i, x, t, eps):
        if i < first:
            return eps
        direction = sum(torch.sub(*model.apply_model(torch.cat([x, x]), torch.cat([t, t]),
                                                     torch.cat([positive, negative])).chunk(2))
                        for positive, negative in encoded)
        return eps + scale * direction

    images = model.sample([p for p in prompts for _ in range(count)], steps=args.steps, guidance=args.guidance,
                          noise=noise.repeat_interleave(count, dim=0), adjust=adjust)
    return Grid.of(alphas, images.reshape(len(prompts), count, 32, 32, 3))


def trained_or_saved(model, spec: SliderSpec, args, official: bool, pair_dir: str, label: str,
                     companions: dict[str, SliderNetwork]):
    """(network, effect score, training stats): trained (among ``companions``), or read back from ``--sliders-dir``
    when a file of that name is there (stats None)."""
    path = saved_path(args, spec, label) if args.sliders_dir else None
    settings = training_settings(args, spec, official) | (
        {"among": sorted(companions), "among_alphas": args.among_alphas} if companions else {})
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
    settings = {name: value[spec.name] if isinstance(value, dict) else value for name, value in values.items()}
    start = trained_from(args, spec, official)
    return settings | ({"trained_from": start} if start else {})  # stores made before the option still match


# --------------------------------------------------------------------------------------------- run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
                        "each of those on at an α drawn per iteration from --among-alphas (they are trained first)")
    parser.add_argument("--among-alphas", default=",".join(f"{a:g}" for a in TrainConfig(name="x").among_alphas),
                        help="the α the companions of --among are drawn from (the trainer's among_alphas)")
    parser.add_argument("--train-from-start", action="store_true",
                        help="train our sliders only from the start they are generated with (--start), as the "
                        "trainer's train_from_start does")
    parser.add_argument("--ideal", action="store_true",
                        help="also our text sliders' training target applied directly while sampling, from 0 and "
                        "from --start (what a slider that fitted its target exactly would do)")
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
    args.alphas = np.array([float(a) for a in args.alphas.split(",")])
    args.image_scales = [float(s) for s in args.image_scales.split(",")]
    if not (args.alphas == 0).any():
        parser.error("--alphas must include 0 (the reference image)")
    args.among = [name for name in args.among.split(",") if name]
    args.among_alphas = [float(a) for a in args.among_alphas.split(",")]
    unknown = sorted(set(args.among) - {s.name for s in SLIDERS if s.prompt is not None})
    if unknown:
        parser.error(f"--among: not a text slider: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    alphas = args.alphas
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
            if args.start[spec.name] is None and spec.prompt is not None:  # probed before training, as ours does
                args.start[spec.name] = estimated_start(model, spec, args)
            variants = [("ours", False)] + ([] if args.no_official or spec.prompt is None else [("official", True)])
            made = {}
            for label, official in variants:
                training_began = time.time()
                # Companions: the run's text sliders trained on their own (so already trained, see ``chosen``).
                among = ({o.name: trained[o.name] for o in chosen if o.prompt is not None and o.name not in args.among}
                         if label == "ours" and spec.name in args.among else {})
                network, score, stats = trained_or_saved(model, spec, args, official, pair_dir, label, among)
                made[label] = network, score, stats, time.time() - training_began
            trained[spec.name] = made["ours"][0]
            if args.start[spec.name] is None:  # an image slider: probed after training, as ours does
                args.start[spec.name] = estimated_slider_start(model, spec, trained[spec.name], args)
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
            if args.ideal and spec.prompt is not None:
                for start in [0.0] + ([args.start[spec.name]] if args.start[spec.name] else []):
                    grid = target_applied(model, attributes, prompts, spec, noise, args, start)
                    rows.append(grid_row(spec, "ideal slider" + (f" s{start:g}" if start else ""), grid, edit, args))
            for label, (network, score, stats, training_seconds) in made.items():
                starts = [0.0] + ([args.start[spec.name]] if args.start[spec.name] and label == "ours" else [])
                for start in starts:
                    grid = Grid.of(alphas, generate(model, prompts, noise, alphas, [network], args.steps,
                                                    args.guidance, start))
                    rows.append(grid_row(spec, ours_label(start) if label == "ours" else label, grid, edit, args,
                                         score))
                how = (f"trained in {training_seconds:.0f} s ({stats.unet_calls} UNet calls, {stats.unet_rows} rows)"
                       if stats else "read from " + saved_path(args, spec, label))
                print(f"  {spec.name} ({label}) {how}, done at {time.time() - began:.0f} s", flush=True)

        text = [s for s in chosen if s.prompt is not None and s.name in trained]
        composition = composition_of(model, text, trained, attributes, noise, args) if len(text) > 1 else []

    print_report(rows, composition, alphas, args.match)
    print(f"\nfinished in {time.time() - began:.0f} s")


def grid_row(spec: SliderSpec, label: str, grid: Grid, edit: dict, args, score=None) -> tuple:
    """A report row: the grid's effect, its changes at the edit's effect and at the largest |α|."""
    top = int(np.argmax(np.abs(args.alphas)))
    return (spec.name, label, grid.effect(spec.feature), matched_change(grid, spec.feature, edit["effect"], args.match),
            grid.change_at(spec.feature, top), score)


def composition_of(model, text: list[SliderSpec], trained: dict[str, SliderNetwork], attributes, noise,
                   args) -> list[Composed]:
    """Each text slider's slope alone, with all at the same α, and with the others held at a fixed α per seed."""
    alphas = args.alphas
    composition = []
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
    return composition


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


if __name__ == "__main__":
    main()
