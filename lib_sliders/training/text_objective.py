"""The text-slider objective: the paper's target, with a preservation sum and both directions.

For a prompt entry (target c_t, positive c+, negative c−, neutral c_n, preservation set P, guidance η):

    ε*(x_t, c_t) ← ε(x_t, c_n) ± η · Σ_{p∈P} [ε(x_t, c+ ⊕ p) − ε(x_t, c− ⊕ p)]

(+ to enhance, − to erase; with P empty the sum is the single term ε(c+) − ε(c−)). The slider at α=+1
learns that target; with ``bidirectional`` it also learns the mirrored target at α=−1, so negative α
is trained rather than extrapolated.

Training latents follow the official loop: start from noise and denoise k DDIM steps with the slider
on (CFG between c− and c_t), then train at the timestep the latent actually sits at (the official
code labels it one DDIM step too early). A slider used from a start (a fraction of the steps) trains only
from there: k is drawn from the steps it acts on, and it is off for the denoising steps before them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .backend import DiffusionBackend, select_cond
from .schedule import ddim_step, ddim_timesteps, first_step_on, first_training_step


def with_concept(prompt: str, concept: str | None) -> str:
    return prompt if not concept else f"{prompt}, {concept}"


@dataclass
class _EntryRows:
    """Row indices, in the cached conditioning, of the prompts one entry uses."""

    target: int
    neutral: int
    negative: int
    positives: list[int]  # c+ ⊕ p for each p (or [c+] when P is empty)
    negatives: list[int]  # c− ⊕ p likewise
    sign: float  # +η to enhance, −η to erase


class TextObjective:
    def __init__(self, backend: DiffusionBackend, config, run, start: float = 0.0):
        self.backend = backend
        self.config = config
        self.run = run  # the trainer's shared state: engine, generator, autocast, predict
        self.start = start  # fraction of the steps before which the slider is off (and not trained)
        self.first_step = first_training_step(start, config.max_denoising_steps)  # the first k drawn
        self.slider_from = min(first_step_on(start, config.max_denoising_steps), self.first_step)  # 0 from 0
        strings: dict[str, int] = {}

        def row(text: str) -> int:
            return strings.setdefault(text, len(strings))

        self.entries = []
        for prompt in config.prompts:
            concepts = list(prompt.preservation) or [None]
            self.entries.append(_EntryRows(
                target=row(prompt.target),
                neutral=row(prompt.neutral if prompt.neutral else prompt.target),
                negative=row(prompt.negative),
                positives=[row(with_concept(prompt.positive, p)) for p in concepts],
                negatives=[row(with_concept(prompt.negative, p)) for p in concepts],
                sign=prompt.guidance * (1.0 if prompt.action == "enhance" else -1.0),
            ))
        self.weights = torch.tensor([p.weight for p in config.prompts], dtype=torch.float32)
        # Every distinct prompt is encoded once, in one call; iterations only index into it.
        self.cond = backend.encode_prompts(list(strings))
        self.timesteps = ddim_timesteps(config.max_denoising_steps, len(backend.alphas_cumprod))
        # Index tensors on the device, made once each: a copy from the host inside the loop would make the
        # CPU wait for the GPU's queue (the denoising calls) before it could queue the training call.
        self._device_timesteps = self.timesteps.to(backend.device)
        self._indices: dict[tuple[int, ...], torch.Tensor] = {}

    def _index(self, rows: list[int]) -> torch.Tensor:
        key = tuple(rows)
        index = self._indices.get(key)
        if index is None:
            index = self._indices[key] = torch.tensor(key, dtype=torch.long).to(self.backend.device)
        return index

    def _cond_rows(self, rows: list[int]):
        return select_cond(self.cond, self._index(rows))

    # ----- one training iteration --------------------------------------------------------------
    def loss(self) -> torch.Tensor:
        run, config = self.run, self.config
        batch = config.batch_size
        entries = [self.entries[i] for i in torch.multinomial(self.weights, batch, True, generator=run.generator)]
        steps = self._draw_steps()
        direction_sign = 1.0
        if config.bidirectional and torch.rand((), generator=run.generator) < 0.5:
            direction_sign = -1.0
        noise = run.randn(batch)
        points = self.denoise(noise, entries, steps, slider_alpha=direction_sign)
        # Every captured point of the trajectory is a training sample: rows are point-major.
        x_t = torch.cat([x for x, _ in points])
        t = torch.cat([t for _, t in points])
        entries = entries * len(points)
        neutral, direction = self.targets(x_t, t, entries)
        positive_target, negative_target = neutral + direction, neutral - direction

        trained = [(1.0, positive_target)] + ([(-1.0, negative_target)] if config.bidirectional else [])
        alphas = torch.tensor([a for a, _ in trained for _ in entries])
        run.set_alpha(alphas)
        cond = self._cond_rows([e.target for _ in trained for e in entries])
        with run.autocast():
            prediction = run.predict(x_t.repeat(len(trained), 1, 1, 1), t.repeat(len(trained)), cond)
        target = torch.cat([tgt for _, tgt in trained])
        return torch.nn.functional.mse_loss(prediction.float(), target)

    def _draw_steps(self) -> list[int]:
        """The DDIM step counts k at which this iteration trains (ascending)."""
        config, generator, first = self.config, self.run.generator, self.first_step
        if config.timesteps_per_trajectory == 1:
            return [int(torch.randint(first, config.max_denoising_steps, (1,), generator=generator))]
        chosen = torch.randperm(config.max_denoising_steps - first, generator=generator)
        return sorted(int(k) + first for k in chosen[:config.timesteps_per_trajectory])

    @torch.no_grad()
    def denoise(self, noise: torch.Tensor, entries: list[_EntryRows], steps: list[int], slider_alpha: float,
                timesteps: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """DDIM from ``noise`` with the slider at ``slider_alpha`` from the step its start opens on (off before it,
        as it is when used); (x_t, t) after each count of ``steps``.

        The latent after k steps sits at ``timesteps[k]``, and that is its training label.
        """
        run = self.run
        on_device = self._device_timesteps if timesteps is None else timesteps.to(noise.device)
        cond = self._cond_rows([e.negative for e in entries] + [e.target for e in entries])
        alphas = self.backend.alphas_cumprod[on_device]
        last = max(steps)
        slider_from = min(self.slider_from if slider_alpha else 0, last)
        x, points = noise, []
        for begin, end, alpha in ((0, slider_from, 0.0), (slider_from, last, slider_alpha)):
            if begin == end:
                continue
            with run.sampling_slider(alpha):
                for i in range(begin, end):
                    t = on_device[i].repeat(2 * len(entries))
                    eps_uncond, eps_cond = run.predict_sampling(torch.cat([x, x]), t, cond).float().chunk(2)
                    eps = eps_uncond + self.config.sampling_guidance * (eps_cond - eps_uncond)
                    x = ddim_step(x, eps, alphas[i], alphas[i + 1])
                    if i + 1 in steps:
                        points.append((x, on_device[i + 1].repeat(len(entries))))
        return points

    @torch.no_grad()
    def targets(self, x_t: torch.Tensor, t: torch.Tensor, entries: list[_EntryRows]):
        """Frozen ε(c_n) and the signed η-weighted direction, all conditionings in one UNet call.

        The α=+1 target is ``neutral + direction``, the α=−1 target ``neutral − direction``.
        """
        run = self.run
        rows, spans, sample_rows = [], [], []
        for sample, entry in enumerate(entries):
            start = len(rows)
            rows += [entry.neutral, *entry.positives, *entry.negatives]
            spans.append((start, len(entry.positives)))
            sample_rows += [sample] * (len(rows) - start)
        samples = self._index(sample_rows)  # each sample repeated for its entry's prompts
        run.set_alpha(torch.tensor(0.0))
        with run.autocast():
            eps = run.predict(x_t.index_select(0, samples), t.index_select(0, samples), self._cond_rows(rows)).float()
        neutral, direction = [], []
        for entry, (start, n) in zip(entries, spans, strict=True):
            pos, neg = eps[start + 1:start + 1 + n], eps[start + 1 + n:start + 1 + 2 * n]
            neutral.append(eps[start])
            direction.append(entry.sign * (pos - neg).sum(0))
        return torch.stack(neutral), torch.stack(direction)

    # ----- held-out evaluation ------------------------------------------------------------------
    @torch.no_grad()
    def effect_batch(self, generator: torch.Generator, samples: int):
        """Held-out (x_t, t, cond, wanted Δε at α=+1, base ε) with latents from the base model (short schedule)."""
        run = self.run
        entries = [self.entries[i] for i in torch.multinomial(self.weights, samples, True, generator=generator)]
        short = ddim_timesteps(10, len(self.backend.alphas_cumprod))
        # Within the steps the slider trains at (from its start), as far as the short schedule has them.
        k = int(torch.randint(min(max(2, first_training_step(self.start, 10)), 8), 9, (1,), generator=generator))
        noise = run.randn(samples, generator=generator)
        ((x_t, t),) = self.denoise(noise, entries, [k], slider_alpha=0.0, timesteps=short)
        _, direction = self.targets(x_t, t, entries)
        run.set_alpha(torch.tensor(0.0))
        cond = select_cond(self.cond, [e.target for e in entries])
        with run.autocast():
            base = run.predict(x_t, t, cond).float()
        return x_t, t, cond, direction, base
