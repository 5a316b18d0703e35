"""The effect score: does the trained slider move ε the way it was asked to?

On held-out noise and timesteps, compare the slider's change of the noise prediction,
Δε(α) = ε_slider(α) − ε_base, with the change the objective asked for at α = 1 (``wanted``):

- ``cosine``: direction agreement of Δε(+1) with ``wanted`` (1 = exactly along it);
- ``gain``: how much of ``wanted`` Δε(+1) achieves, ⟨Δε, wanted⟩ / ‖wanted‖² (1 = all of it);
- ``cosine_negative``/``gain_negative``: the same for α = −1 against −``wanted``.

A slider whose gain or cosine is near zero "does nothing": the users' top complaint, caught here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

MIN_GAIN = 0.05
MIN_COSINE = 0.1


@dataclass(frozen=True)
class EffectScore:
    cosine: float
    gain: float
    cosine_negative: float
    gain_negative: float

    @property
    def does_nothing(self) -> bool:
        return self.gain < MIN_GAIN or self.cosine < MIN_COSINE

    def summary(self) -> str:
        verdict = "this slider does nothing" if self.does_nothing else "ok"
        return (f"effect: cosine {self.cosine:.2f}, gain {self.gain:.2f} per unit α "
                f"(α=−1: cosine {self.cosine_negative:.2f}, gain {self.gain_negative:.2f}) — {verdict}")

    def to_dict(self) -> dict:
        return {**asdict(self), "does_nothing": self.does_nothing}


def _agreement(delta: torch.Tensor, wanted: torch.Tensor) -> tuple[float, float]:
    delta, wanted = delta.flatten().double(), wanted.flatten().double()
    dot = float(delta @ wanted)
    wanted_norm2 = float(wanted @ wanted)
    delta_norm = float(delta.norm())
    cosine = dot / (delta_norm * wanted_norm2**0.5) if delta_norm > 0 and wanted_norm2 > 0 else 0.0
    gain = dot / wanted_norm2 if wanted_norm2 > 0 else 0.0
    return cosine, gain


@torch.no_grad()
def measure_effect(objective, run, seed: int, samples: int = 4) -> EffectScore:
    """Score the slider currently attached through ``run`` on ``samples`` held-out draws."""
    generator = torch.Generator().manual_seed(seed)
    x_t, t, cond, wanted, base = objective.effect_batch(generator, samples)
    deltas = {}
    for alpha in (1.0, -1.0):
        run.set_alpha(torch.tensor(alpha))
        with run.autocast():
            deltas[alpha] = run.predict(x_t, t, cond).float() - base
    run.set_alpha(torch.tensor(0.0))
    cosine, gain = _agreement(deltas[1.0], wanted)
    cosine_negative, gain_negative = _agreement(deltas[-1.0], -wanted)
    return EffectScore(cosine, gain, cosine_negative, gain_negative)
