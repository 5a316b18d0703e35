"""What a training run produces: its ``TrainResult``, and the slider file written from it with our metadata
(the prompts it learned from, the settings, the effect score and the estimated start)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch

from .. import __version__
from ..files.lora import SliderNetwork
from ..files.slider_file import save_slider
from .effect import EffectScore
from .start_estimate import StartEstimate


@dataclass
class TrainResult:
    network: SliderNetwork
    config: object
    iterations: int
    cancelled: bool
    losses: list[float] = field(default_factory=list)
    effect: EffectScore | None = None
    held_out_loss: tuple[float, float] | None = None  # (before, after) training, when asked for
    start_estimate: StartEstimate | None = None  # with ``estimate_start`` (image sliders: when they trained)
    trained_from: float = 0.0  # the start the slider trained from (``train_from_start``); 0 = every step

    @property
    def recommended_start(self) -> float:
        return saved_start(self.start_estimate, self.config)


def saved_start(estimate: StartEstimate | None, config) -> float:
    """The start saved in the file: the estimate when there is one, else the config's ``default_start``."""
    return estimate.start if estimate else config.default_start


def training_metadata(result: TrainResult, *, base_model_name: str | None = None,
                      base_model_hash: str | None = None) -> tuple[dict, dict]:
    """(``sliders.prompts``, ``sliders.training``) for a trained slider's file header."""
    config = result.config
    if config.mode == "text":
        prompts = {"mode": "text", "entries": [asdict(p) for p in config.prompts]}
    else:
        prompts = {"mode": "image", "image_prompt": config.image_prompt, "scales": list(config.scales),
                   "pairs": [os.path.basename(p.after) for p in config.pairs]}
    settings = config.to_dict()
    for key in ("prompts", "pairs", "name"):
        settings.pop(key, None)
    training = {**settings, "iterations_done": result.iterations, "cancelled": result.cancelled,
                "final_loss": result.losses[-1] if result.losses else None, "trainer_version": __version__,
                "base_model": base_model_name, "base_model_hash": base_model_hash,
                "effect": result.effect.to_dict() if result.effect else None}
    if not config.train_among:  # trained alone: the α it would have drawn them at says nothing
        training.pop("among_alphas", None)
    if config.train_from_start:
        training["trained_from"] = result.trained_from
    return prompts, training


def save_trained_slider(result: TrainResult, path: str | os.PathLike, *, prediction_type: str | None = None,
                        base_model_name: str | None = None, base_model_hash: str | None = None,
                        dtype: torch.dtype = torch.float16, overwrite: bool = False) -> dict[str, str]:
    """Write a training result with the core's writer (atomic, kohya keys, our metadata)."""
    (arch,) = result.network.arch
    prompts, training = training_metadata(result, base_model_name=base_model_name, base_model_hash=base_model_hash)
    extra = {"sliders.effect": json.dumps(result.effect.to_dict())} if result.effect else {}
    if result.start_estimate:
        extra["sliders.start_estimate"] = json.dumps(result.start_estimate.to_dict())
    config = result.config
    return save_slider(result.network, path, arch=arch, dtype=dtype, title=config.name,
                       prediction_type=prediction_type, alpha_range=tuple(config.alpha_range),
                       default_start=result.recommended_start, prompts=prompts, training=training,
                       extra_metadata=extra or None, overwrite=overwrite)
