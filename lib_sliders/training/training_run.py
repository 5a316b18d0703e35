"""What the objectives share while a slider trains: the engine driving it, the seeded generator, precision.

``TrainingRun`` gives the objectives the slider at an α (hooks while training, merged into the weights for
no-grad sampling calls, which then may replay as CUDA graphs), noise drawn from the run's generator, autocast,
and counts the UNet calls in ``TrainStats``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..apply.engine import SliderEngine
from ..apply.weight_merge import Contribution, WeightMerger
from ..files.lora import LoraModule
from .backend import DiffusionBackend, to_device
from .cuda_graphs import GraphedCalls


@dataclass
class TrainStats:
    """What the run's UNet calls cost, for progress reports and benchmarks."""

    unet_calls: int = 0
    unet_rows: int = 0
    graph_replays: int = 0  # calls among ``unet_calls`` that were CUDA-graph replays
    graphs: str = "off"  # "on", "off", or why they were turned off


class TrainingRun:
    """What the objectives share: the engine driving the slider, the generator, precision."""

    def __init__(self, backend: DiffusionBackend, engine: SliderEngine, generator: torch.Generator,
                 latent_shape: tuple[int, int, int], autocast_dtype: torch.dtype | None, merge_for_sampling: bool,
                 cuda_graphs: bool = False, stats: TrainStats | None = None, merge_backup_device: str | None = None):
        self.backend = backend
        self.engine = engine
        self.generator = generator
        self.latent_shape = latent_shape
        self.autocast_dtype = autocast_dtype
        self.merge_for_sampling = merge_for_sampling
        self.stats = stats if stats is not None else TrainStats()
        # Graphs replay the merged model only (hooks idle): a replay would skip hooks' Python.
        self.graphs = GraphedCalls(self._predict_for_graph, backend.unet) if cuda_graphs and merge_for_sampling else None
        self.stats.graphs = "on" if self.graphs is not None else "off"
        self._merged = False
        self.merger = WeightMerger(merge_backup_device)
        self._targets: list[tuple[torch.Tensor, LoraModule]] | None = None

    @contextlib.contextmanager
    def sampling_slider(self, alpha: float):
        """The slider at a fixed ``alpha`` for a run of no-grad sampling calls.

        Merged into the weights (restored bitwise afterwards) when ``merge_for_sampling``: the denoising
        calls then cost what the bare UNet costs, instead of paying the hooks on every layer each step.
        The hooks stay attached meanwhile, idle at α = 0, so nothing is re-packed when training resumes.
        At α = 0 (the steps before a slider's start) there is nothing to merge, but the calls are the bare
        UNet's all the same, so they replay the same CUDA graphs.
        """
        if not self.merge_for_sampling:
            self.set_alpha(torch.tensor(alpha))
            yield
            return
        self.set_alpha(torch.tensor(0.0))
        if alpha:
            self.merger.merge({weight: [Contribution(module, alpha)] for weight, module in self._merge_targets()})
        self._merged = True
        try:
            yield
        finally:
            self._merged = False
            if alpha:
                self.merger.restore()

    def _merge_targets(self) -> list[tuple[torch.Tensor, LoraModule]]:
        if self._targets is None:
            network, unet = self.engine.sliders[0].network, self.backend.unet
            self._targets = [(unet.get_submodule(path).weight, module) for path, module in network.unet.items()]
        return self._targets

    def randn(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # Drawn on the CPU so a seed means the same noise on every device.
        noise = torch.randn((batch, *self.latent_shape), generator=generator or self.generator)
        return to_device(noise, self.backend.device)

    def set_alpha(self, alphas: torch.Tensor) -> None:
        self.engine.set_alphas([alphas])

    def autocast(self):
        return autocast_context(self.backend.device, self.autocast_dtype)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        self._count(x_t)
        return self.backend.predict_eps(x_t, t, cond)

    def _count(self, x_t: torch.Tensor) -> None:
        self.stats.unet_calls += 1
        self.stats.unet_rows += x_t.shape[0]

    def predict_sampling(self, x_t: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """A no-grad sampling call (autocast included): a CUDA-graph replay while the slider is merged.

        The result may be a buffer the next call overwrites: use it before then."""
        if self.graphs is None or not self._merged:
            with self.autocast():
                return self.predict(x_t, t, cond)
        output = self.graphs(x_t, t, cond)
        self._count(x_t)
        self.stats.graph_replays = self.graphs.replays
        if self.graphs.disabled is not None:
            self.stats.graphs = f"off ({self.graphs.disabled})"
        elif self.graphs.check_errors:
            self.stats.graphs = f"on (replay check {max(self.graphs.check_errors):.1e})"
        return output

    def _predict_for_graph(self, x_t: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        # Autocast's cast cache must be off while a graph is captured (cached casts would outlive it).
        context = (contextlib.nullcontext() if self.autocast_dtype is None else
                   torch.autocast(self.backend.device.type, dtype=self.autocast_dtype, cache_enabled=False))
        with context:
            return self.backend.predict_eps(x_t, t, cond)


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; nothing when ``dtype`` is None (fp32 runs)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
