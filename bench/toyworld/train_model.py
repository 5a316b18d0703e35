"""Train the toy text-to-image model (``ToyPixelDiffusion``) on the procedural toy world.

    python bench/toyworld/train_model.py --out bench/toyworld/toy_t2i.safetensors --steps 4000 --batch 64 --device cuda

UNet and text model are trained jointly (AdamW, ε-MSE at uniform random t, 10 % of captions dropped
to "" for classifier-free guidance, optional EMA) on ``make_dataset(--dataset-size, --seed)`` with
caption variants. At the end a sample check generates images for held-out captions and reads them
back with ``world.measure``: how often shape and colour follow the caption, and the correlation of the
measured size / background with the captioned (generating) ones. Runs on CPU at small settings.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``lib_sliders`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.toyworld import world  # noqa: E402
from bench.toyworld.model import ToyPixelDiffusion  # noqa: E402


def train(steps: int = 1000, batch: int = 32, device: str = "cpu", dataset_size: int = 20000, seed: int = 0,
          lr: float = 3e-4, cfg_dropout: float = 0.1, ema: float = 0.0, log_every: int = 50,
          model: ToyPixelDiffusion | None = None, tokenizer_dir=None, log=print,
          max_seconds: float | None = None, offset_noise: float = 0.0) -> tuple[ToyPixelDiffusion, list[float]]:
    """Train and return (model, per-step losses); the EMA weights are copied in when ``ema`` > 0.

    ``max_seconds`` stops early (after the step that passes it), for time-boxed CPU runs.

    ``offset_noise`` adds a per-image, per-channel constant of that standard deviation to the noise. Without
    it the model never learns the background word: SD's schedule leaves the image mean readable even at
    t = 999 (a 32 px image's noise mean has std 1/32, the signal's √ᾱ·bg up to ±0.05), so training never
    needs the caption for brightness, and sampling takes it from the starting noise instead."""
    model = model if model is not None else ToyPixelDiffusion(tokenizer_dir, seed=seed)
    model = model.to(device).train().requires_grad_(True)
    images, _, attributes = world.make_dataset(dataset_size, seed)
    rng = np.random.default_rng(seed + 1)
    captions = [world.caption_variants(a)[int(rng.integers(4))] for a in attributes]
    data = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # [N, 3, 32, 32] in [-1, 1]
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    ema_model = copy.deepcopy(model).requires_grad_(False) if ema > 0 else None
    acp = model.alphas_cumprod.to(device)
    generator = torch.Generator().manual_seed(seed + 2)
    losses: list[float] = []
    tokenized: dict[str, torch.Tensor] = {}

    def token_ids(prompts: list[str]) -> torch.Tensor:
        # Tokenised once per caption: the tokenizer, not the tiny model, set the pace on a GPU.
        for prompt in set(prompts) - tokenized.keys():
            tokenized[prompt] = model.cond_stage_model.tokenize([prompt])[0].cpu()
        return torch.stack([tokenized[p] for p in prompts])

    start = time.time()
    for step in range(steps):
        index = torch.randint(len(data), (batch,), generator=generator)
        x0 = data[index].to(device)
        drop = torch.rand(batch, generator=generator) < cfg_dropout
        prompts = ["" if d else captions[i] for d, i in zip(drop.tolist(), index.tolist(), strict=True)]
        t = torch.randint(model.num_timesteps, (batch,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator)
        if offset_noise:
            noise += offset_noise * torch.randn((batch, x0.shape[1], 1, 1), generator=generator)
        noise = noise.to(device)
        a = acp[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = model.cond_stage_model.transformer(input_ids=token_ids(prompts).to(device)).last_hidden_state
        loss = torch.nn.functional.mse_loss(model.apply_model(x_t, t, cond), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if ema_model is not None:
            with torch.no_grad():
                # Warm-up: early on the average follows the weights closely, so the random initial ones
                # don't linger in a short run (0.999 alone would keep 8 % of them after 2500 steps).
                decay = min(ema, (1 + step) / (10 + step))
                for p_ema, p in zip(ema_model.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            recent = losses[-log_every:]
            log(f"step {step + 1}/{steps}  loss {sum(recent) / len(recent):.4f}  {time.time() - start:.0f} s")
        if max_seconds is not None and time.time() - start > max_seconds:
            log(f"time limit: stopped after {step + 1} steps")
            break
    if ema_model is not None:
        model.load_state_dict(ema_model.state_dict())
    return model.eval().requires_grad_(False), losses


def _corr(a: list[float], b: list[float]) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def sample_check(model: ToyPixelDiffusion, n: int = 30, seed: int = 12345, steps: int = 20,
                 guidance: float = 4.0, batch: int = 16) -> dict[str, float]:
    """Generate images for ``n`` held-out captions and measure how well they follow them."""
    _, captions, attributes = world.make_dataset(n, seed)
    images = np.concatenate([model.sample(captions[i:i + batch], steps=steps, guidance=guidance, seed=seed + i)
                             for i in range(0, n, batch)])
    found = shape_ok = colour_ok = 0
    size_true, size_meas, bg_true, bg_meas = [], [], [], []
    for image, attrs in zip(images, attributes, strict=True):
        m = world.measure(image)
        bg_true.append(attrs.background)
        bg_meas.append(m.background)
        if not m.found:
            continue
        found += 1
        shape_ok += m.shape == attrs.shape
        colour_ok += m.colour == attrs.colour
        size_true.append(attrs.size)
        size_meas.append(m.extent if m.extent is not None else m.size)
    return {"n": n, "found": found / n, "shape_match": shape_ok / n, "colour_match": colour_ok / n,
            "size_corr": _corr(size_true, size_meas), "background_corr": _corr(bg_true, bg_meas),
            "chance_shape": 1 / len(world.SHAPES), "chance_colour": 1 / len(world.COLOURS)}, images


def trained_token_ids(model: ToyPixelDiffusion, args) -> list[int]:
    """Every token id the training captions (all variants) and the empty prompt tokenise to."""
    _, _, attributes = world.make_dataset(min(args.dataset_size, 5000), args.seed)
    captions = {""} | {variant for a in attributes for variant in world.caption_variants(a)}
    ids = model.cond_stage_model.tokenizer(sorted(captions), truncation=True, max_length=77).input_ids
    return sorted({i for row in ids for i in row})


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="weights file (.safetensors)")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dataset-size", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay (0 = off), e.g. 0.999")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--check", type=int, default=30, help="captions in the final sample check (0 = skip)")
    parser.add_argument("--fp16", action="store_true", help="save weights as float16 (half the file size)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--offset-noise", type=float, default=0.0,
                        help="std of a per-image, per-channel constant added to the noise (0.15: learns brightness)")
    parser.add_argument("--init", default=None, help="start from these weights (.safetensors) instead of random ones")
    parser.add_argument("--sheet", default=None, help="save a contact sheet of the check samples (.npy)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    initial = ToyPixelDiffusion.from_file(args.init) if args.init else None
    model, losses = train(args.steps, args.batch, args.device, args.dataset_size, args.seed, args.lr,
                          ema=args.ema, log_every=args.log_every, model=initial, offset_noise=args.offset_noise,
                          max_seconds=None if args.max_minutes is None else 60 * args.max_minutes)
    print(f"trained {len(losses)} steps in {time.time() - start:.0f} s; "
          f"first/last-50 mean loss {np.mean(losses[:50]):.4f} / {np.mean(losses[-50:]):.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out, dtype=torch.float16 if args.fp16 else None, token_ids=trained_token_ids(model, args))
    print(f"saved {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")
    result = {"losses": losses}
    if args.check:
        metrics, images = sample_check(model, args.check)
        result["check"] = metrics
        print("sample check: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) and not math.isnan(v) else f"{k} {v}"
                                          for k, v in metrics.items()))
        if args.sheet:
            np.save(args.sheet, world.contact_sheet(images))
    return result


if __name__ == "__main__":
    main()
