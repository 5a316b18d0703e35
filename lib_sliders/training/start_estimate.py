"""Where in the sampling should a slider begin? An estimate from the model itself.

A slider that acts from the first step also moves what the first steps decide (layout, pose, position); one
that starts after its attribute is decided does nothing. Attributes are decided at different points (on the
toy world of ``bench/fidelity.py``, a background in the first steps, a colour only past half way), so the start
worth recommending depends on the slider.

The model shows where. From shared noise, denoise with the target prompt and, from step s on, switch to the
positive prompt in one copy and to the negative prompt in another (the webui's prompt editing,
``[target:positive:s]``), then finish both. The distance between the two results, over the distance when the
switch happens at the first step, is the share of the attribute still open at s. The recommended start is the
last s (in tenths of the steps, at most 0.8) up to which at least ``KEEP`` of it stays open.

An image slider has no prompt pair: the same probe runs after training with the trained slider switched on at
+s in one copy and −s in the other (its scale), on its image prompt (``estimate_slider_start``).

DDIM over evenly spaced timesteps, CFG against the empty prompt; rows batched ``max_rows`` at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .backend import Conditioning, select_cond
from .schedule import ddim_step, ddim_timesteps
from .text_objective import with_concept

KEEP = 0.7  # share of the attribute that must still be open at the recommended start
STEPS = 10  # the probe's schedule: candidate starts 0, 0.1, …, 0.8
CANDIDATES = 9


BETWEEN_PROMPTS = "the positive and negative prompts"


@dataclass(frozen=True)
class StartEstimate:
    start: float  # recommended fraction of the steps before the slider acts
    open_share: tuple[float, ...]  # share still open at starts 0, 1/STEPS, 2/STEPS, …
    between: str = BETWEEN_PROMPTS  # what the probe switched to: a text slider's prompts, or an image slider at ±s

    def summary(self) -> str:
        index = round(self.start * STEPS)
        after = (f"; {self.open_share[index + 1]:.0%} from {(index + 1) / STEPS:g}"
                 if index + 1 < len(self.open_share) else "")
        return (f"recommended start {self.start:g}: {self.open_share[index]:.0%} of the difference between "
                f"{self.between} is still open from there{after}")

    def to_dict(self) -> dict:
        return {"start": self.start, "open_share": [round(v, 4) for v in self.open_share], "keep": KEEP,
                "steps": STEPS, "between": self.between}


def probe_rows(prompts, samples: int) -> list[tuple[str, str, str]]:
    """(target, positive, negative) of each probe sample: the entries and their preservation concepts in turn."""
    combos = [(with_concept(p.target, c), with_concept(p.positive, c), with_concept(p.negative, c))
              for p in prompts for c in (list(p.preservation) or [None])]
    return [combos[i % len(combos)] for i in range(samples)]


def recommended_start(open_share: list[float], keep: float = KEEP) -> float:
    """The last candidate start up to which every share is at least ``keep`` (0 when the first after 0 is not)."""
    best = 0
    for index in range(1, len(open_share)):
        if not open_share[index] >= keep:
            break
        best = index
    return best / STEPS


# A probe row: (its prompt's row in the encoded conditioning, the slider's α on it).
Row = tuple[int, float]


@torch.no_grad()
def estimate_start(predict: Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor],
                   encode: Callable[[list[str]], Conditioning], alphas_cumprod: torch.Tensor, prompts,
                   latent_shape: tuple[int, int, int], generator: torch.Generator, *, samples: int = 4,
                   guidance: float = 3.0, max_rows: int = 16) -> StartEstimate:
    """Probe the model as the module docstring says. ``predict(x_t, t, cond)`` is the base model's ε
    (no slider acting); ``prompts`` are the slider's ``TextPrompt`` entries."""
    rows = probe_rows(prompts, samples)
    texts = sorted({text for row in rows for text in row} | {""})
    cond = encode(texts)
    row_of = {text: i for i, text in enumerate(texts)}
    base = [(row_of[t], 0.0) for t, _, _ in rows]
    switched = [(row_of[p], 0.0) for _, p, _ in rows] + [(row_of[n], 0.0) for _, _, n in rows]
    shares = _open_shares(lambda x, t, cond_, alphas: predict(x, t, cond_), cond, row_of[""], base, switched,
                          alphas_cumprod, latent_shape, generator, guidance, max_rows)
    return StartEstimate(recommended_start(shares), tuple(shares))


@torch.no_grad()
def estimate_slider_start(predict: Callable[[torch.Tensor, torch.Tensor, Conditioning, torch.Tensor], torch.Tensor],
                          encode: Callable[[list[str]], Conditioning], alphas_cumprod: torch.Tensor, prompt: str,
                          scale: float, latent_shape: tuple[int, int, int], generator: torch.Generator, *,
                          samples: int = 4, guidance: float = 3.0, max_rows: int = 16) -> StartEstimate:
    """The probe for a trained slider with no prompt pair (an image slider): from step s on, the slider at +scale in
    one copy and at −scale in the other, on ``prompt``. ``predict(x_t, t, cond, alphas)`` is ε with the slider at
    ``alphas`` (one per row)."""
    texts = sorted({prompt, ""})
    cond = encode(texts)
    row = texts.index(prompt)
    switched = [(row, scale)] * samples + [(row, -scale)] * samples
    guidance = guidance if prompt else 1.0  # the empty prompt against itself: CFG would only repeat the rows
    shares = _open_shares(predict, cond, texts.index(""), [(row, 0.0)] * samples, switched, alphas_cumprod,
                          latent_shape, generator, guidance, max_rows)
    return StartEstimate(recommended_start(shares), tuple(shares), f"the slider at ±{scale:g}")


def _open_shares(predict, cond: Conditioning, empty: int, base_rows: list[Row], switched: list[Row],
                 alphas_cumprod: torch.Tensor, latent_shape: tuple[int, int, int], generator: torch.Generator,
                 guidance: float, max_rows: int) -> list[float]:
    """Denoise ``base_rows`` from shared noise; from each candidate step on, a copy switched to ``switched`` (its
    first half against its second half); the two halves' distance at the end over that when switched at step 0."""
    samples = len(base_rows)
    device = alphas_cumprod.device
    timesteps = ddim_timesteps(STEPS, len(alphas_cumprod)).to(device)
    alphas = torch.cat([alphas_cumprod[timesteps], torch.ones(1, device=device)])

    noise = torch.randn(samples, *latent_shape, generator=generator).to(device)
    base, branches = noise, []  # branches[c]: [positives; negatives] switched from step c
    for step in range(STEPS):
        if step < CANDIDATES:
            branches.append(torch.cat([base, base]))
        groups = ([(base, base_rows)] if step < CANDIDATES - 1 else []) + [(x, switched) for x in branches]
        x = torch.cat([g for g, _ in groups])
        eps = _guided(predict, x, timesteps[step], [r for _, rs in groups for r in rs], cond, empty, guidance,
                      max_rows)
        x = ddim_step(x, eps, alphas[step], alphas[step + 1])
        parts = list(x.split([len(g) for g, _ in groups]))
        if step < CANDIDATES - 1:
            base = parts.pop(0)
        branches = parts
    distances = [(b[:samples] - b[samples:]).float().flatten(1).pow(2).mean(1).sqrt().mean() for b in branches]
    first = float(distances[0])
    return [float(d) / first if first > 0 else 0.0 for d in distances]


def _guided(predict, x: torch.Tensor, t: torch.Tensor, rows: list[Row], cond: Conditioning, empty: int,
            guidance: float, max_rows: int) -> torch.Tensor:
    """CFG ε for ``x`` on ``rows`` (prompt row, slider α), against the empty prompt at the same α, ``max_rows`` UNet
    rows a call (guidance 1: the conditional ε alone, no unconditional rows)."""
    out = []
    halves = 1 if guidance == 1 else 2
    chunk = max(1, max_rows // halves)
    for begin in range(0, len(x), chunk):
        part, these = x[begin:begin + chunk], rows[begin:begin + chunk]
        index = ([r for r, _ in these] + [empty] * len(part))[:halves * len(part)]
        alphas = torch.tensor([a for _, a in these] * halves, device=x.device)
        eps = predict(part.repeat(halves, 1, 1, 1), t.repeat(halves * len(part)), select_cond(cond, index),
                      alphas).float()
        if halves == 1:
            out.append(eps)
            continue
        eps_cond, eps_uncond = eps.chunk(2)
        out.append(eps_uncond + guidance * (eps_cond - eps_uncond))
    return torch.cat(out)


__all__ = ["KEEP", "StartEstimate", "estimate_slider_start", "estimate_start", "probe_rows", "recommended_start"]
