"""The training loop: a slider trained on the live model, which is left exactly as it was found.

The slider is attached through the core engine's hooks (never merged into the model's weights), its
weights are fp32 masters (autocast runs the UNet in half precision when asked), every random draw
comes from one seeded generator (so a run is deterministic, and a resumed run repeats the
uninterrupted one bit for bit), and a cooperative ``should_stop`` ends the run early with what was
learned so far.

Here: ``SliderTrainer`` and its loop. What the objectives share while it runs is ``training_run``'s,
resumable checkpoints are ``resume_state``'s, and the result and its slider file ``trained_slider``'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch

from ..apply.engine import ActiveSlider, SliderEngine
from ..apply.layer_delta import is_float8
from ..errors import SliderError
from ..files.arch import detect_model_arch
from ..files.lora import LoraModule, SliderNetwork
from ..prompt.presets import select_layers
from .backend import DiffusionBackend, resolution_step
from .checkpointing import gradient_checkpointing
from .config_values import ConfigError
from .effect import measure_effect
from .image_objective import ImageObjective
from .offload import modules_on_cpu
from .resume_state import load_state, save_state
from .start_estimate import StartEstimate, estimate_slider_start, estimate_start
from .text_objective import TextObjective
from .trained_slider import TrainResult, saved_start
from .training_run import TrainingRun, TrainStats, autocast_context

EFFECT_SEED_OFFSET = 1_000_003  # held-out draws never coincide with training draws
START_SEED_OFFSET = 2_000_029  # the start probe's noise likewise
COMPANION_SEED_OFFSET = 3_000_017  # the companions' α, drawn per iteration from their own seed


@dataclass(frozen=True)
class TrainProgress:
    iteration: int  # iterations done
    total: int
    loss: float  # mean loss since the previous report
    its_per_second: float
    eta_seconds: float


def _autocast_dtype(precision: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        if model_dtype != torch.float32:
            raise SliderError("precision: fp32 training needs a full-precision model (start the webui with --no-half)")
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if is_float8(model_dtype):
        # Weights stored in fp8 (the webui's "FP8 weight") are computed in half precision, as the webui does:
        # fp16 on a GPU, bf16 on a CPU.
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    # auto: full precision when the model is, else the model's own half type
    return None if model_dtype == torch.float32 else model_dtype


def new_slider_network(unet: torch.nn.Module, config, generator: torch.Generator, device) -> SliderNetwork:
    """Trainable LoRA weights on the preset's layers: ``down`` Kaiming-uniform, ``up`` zero (starts as a no-op)."""
    modules = {}
    for path, layer in select_layers(unet, config.preset).items():
        if isinstance(layer, torch.nn.Conv2d):
            rank = min(config.rank, layer.in_channels, layer.out_channels)
            down = torch.empty(rank, layer.in_channels, *layer.kernel_size)
            up = torch.zeros(layer.out_channels, rank, 1, 1)
        else:
            rank = config.rank
            down = torch.empty(rank, layer.in_features)
            up = torch.zeros(layer.out_features, rank)
        torch.nn.init.kaiming_uniform_(down, a=1, generator=generator)
        modules[path] = LoraModule(torch.nn.Parameter(down.to(device)), torch.nn.Parameter(up.to(device)),
                                   alpha=float(config.alpha))
    return SliderNetwork(name=config.name, unet=modules)


def _parameters(network: SliderNetwork) -> list[torch.Tensor]:
    return [tensor for module in network.unet.values() for tensor in (module.down, module.up)]


class SliderTrainer:
    def __init__(self, backend: DiffusionBackend, config, *,
                 on_progress: Callable[[TrainProgress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 checkpoint_path: str | os.PathLike | None = None,
                 progress_every: int | None = None, held_out_draws: int = 0,
                 merge_for_sampling: bool | None = None, cuda_graphs: bool | None = None,
                 offload_encoders: bool | None = None, merge_backup_device: str | None = None,
                 effect_samples: int = 4, start_samples: int = 8,
                 companions: Mapping[str, SliderNetwork] | None = None):
        config.validate()
        step = resolution_step(backend)
        if config.resolution % step:
            raise ConfigError("resolution", f"{config.resolution} px doesn't fit this model: it trains at multiples "
                                            f"of {step} px")
        self.backend = backend
        self.config = config
        self.on_progress = on_progress
        self.should_stop = should_stop or (lambda: False)
        self.checkpoint_path = checkpoint_path
        self.progress_every = progress_every or max(1, config.iterations // 100)
        self.held_out_draws = held_out_draws  # > 0: measure the loss on fixed draws before and after
        self.effect_samples = effect_samples  # held-out draws for the effect score; 0 skips it
        self.start_samples = start_samples  # noise draws of the start estimate; 0 skips it
        # ``config.train_among``, loaded by the caller (name → network): on during training, each at an α drawn
        # per iteration from ``config.among_alphas``, so that the slider learns its change among theirs. They
        # are not trained.
        companions = dict(companions or {})
        if set(companions) != set(config.train_among):  # the config refuses a name listed twice
            missing = [name for name in config.train_among if name not in companions]
            extra = sorted(set(companions) - set(config.train_among))
            raise ConfigError("train_among", f"the sliders named here and those given differ (not given: "
                                             f"{', '.join(missing) or 'none'}; not named: {', '.join(extra) or 'none'})")
        # Their UNet part only: the prompts' embeddings are encoded once, before the loop, with no slider on.
        self.companions = [replace(companions[name], text=[]) for name in config.train_among]
        self.companion_alphas = torch.tensor([float(a) for a in config.among_alphas])
        self.start_estimate: StartEstimate | None = None
        self.trained_from = 0.0  # set by train(): the start the slider trains from
        # Merging pays off where the hooks' kernel launches dominate (GPU); on a CPU the merge costs more.
        # Weights stored in fp8 can't take a merged delta (it would round away): hooks there.
        fp8 = is_float8(backend.dtype)
        if merge_for_sampling and fp8:
            raise SliderError("merge_for_sampling: the model's weights are stored in fp8, which can't hold a merged "
                              "slider; leave it unset")
        self.merge_for_sampling = (backend.device.type == "cuda" and not fp8 if merge_for_sampling is None
                                   else merge_for_sampling)
        # The merged sampling calls replayed as CUDA graphs (on CUDA, by default; falls back by itself).
        # Companions' hooks would be captured with one α; their α changes every iteration.
        self.cuda_graphs = (backend.device.type == "cuda" and not self.companions if cuda_graphs is None
                            else cuda_graphs)
        if self.cuda_graphs and backend.device.type != "cuda":
            raise SliderError("cuda_graphs: CUDA graphs need a CUDA device")
        if self.cuda_graphs and self.companions:
            raise SliderError("cuda_graphs: not with companion sliders (their α changes every iteration)")
        # Text encoders and VAE wait on the CPU while the loop runs (GPU memory is what limits a run there).
        self.offload_encoders = backend.device.type == "cuda" if offload_encoders is None else offload_encoders
        # Where merging keeps the weights it overwrites (None: beside them; "cpu" saves GPU memory, costs copies).
        self.merge_backup_device = merge_backup_device
        self.stats = TrainStats()

    def train(self, resume_from: str | os.PathLike | None = None) -> TrainResult:
        config, unet = self.config, self.backend.unet
        saved_mode = unet.training
        saved_requires_grad = [p.requires_grad for p in unet.parameters()]
        engine = SliderEngine(unet)
        # A second engine: packed with the trained slider, the companions' frozen weights would be copied into
        # each layer's packed LoRA together with the trained ones, which must stay the optimiser's parameters.
        companions = SliderEngine(unet)
        try:
            for network in self.companions:
                companions.validate(network)
            unet.eval().requires_grad_(False)
            with gradient_checkpointing(unet, config.gradient_checkpointing):
                return self._train(engine, companions, resume_from)
        finally:
            engine.clear()
            companions.clear()
            unet.train(saved_mode)
            for parameter, requires_grad in zip(unet.parameters(), saved_requires_grad, strict=True):
                parameter.requires_grad_(requires_grad)

    def _train(self, engine: SliderEngine, companions: SliderEngine, resume_from) -> TrainResult:
        backend, config = self.backend, self.config
        generator = torch.Generator().manual_seed(config.seed)
        network = new_slider_network(backend.unet, config, generator, backend.device)
        channels = getattr(backend.unet, "in_channels", 4)
        side = config.resolution // getattr(backend, "latent_scale", 8)
        autocast_dtype = _autocast_dtype(config.precision, backend.dtype, backend.device)
        # Before the slider is attached: the probe needs the base model, and its own generator keeps the
        # training draws the same with the estimate on or off.
        self.start_estimate = (self._estimate_start((channels, side, side), autocast_dtype)
                               if config.mode == "text" and config.estimate_start and self.start_samples else None)
        self.trained_from = self._start_to_train_from()
        engine.apply([ActiveSlider(network, 0.0)])
        if self.companions:
            companions.apply([ActiveSlider(c, 0.0) for c in self.companions])
        run = TrainingRun(backend, engine, generator, (channels, side, side), autocast_dtype, self.merge_for_sampling,
                          cuda_graphs=self.cuda_graphs, stats=self.stats, merge_backup_device=self.merge_backup_device)
        kind = TextObjective if config.mode == "text" else ImageObjective
        objective = kind(backend, config, run, start=self.trained_from)
        parameters = _parameters(network)
        optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler(backend.device.type, enabled=run.autocast_dtype == torch.float16)

        start, losses = 0, []
        if resume_from is not None:
            start, losses = load_state(resume_from, config, network, optimizer, generator)
        with modules_on_cpu(backend.encoders(), enabled=self.offload_encoders):  # prompts and images are encoded
            return self._loop(run, objective, network, optimizer, scaler, start, losses, companions)

    def _companion_alphas(self, iteration: int) -> list[float]:
        # Seeded by the iteration, so that a resumed run draws what the uninterrupted one would have.
        generator = torch.Generator().manual_seed(self.config.seed + COMPANION_SEED_OFFSET + iteration)
        picks = torch.randint(0, len(self.companion_alphas), (len(self.companions),), generator=generator)
        return self.companion_alphas[picks].tolist()

    def _loop(self, run: TrainingRun, objective, network: SliderNetwork, optimizer, scaler, start: int,
              losses: list[float], companions: SliderEngine) -> TrainResult:
        backend, config, generator = self.backend, self.config, run.generator
        held_out_seed = config.seed + EFFECT_SEED_OFFSET
        loss_before = self.held_out_loss(objective, run, held_out_seed) if self.held_out_draws else None

        cancelled, pending, began = False, [], time.perf_counter()
        iteration = start
        while iteration < config.iterations:
            if self.should_stop():
                cancelled = True
                # So that "resume" continues exactly where the cancel stopped; a cancel before this run did
                # anything leaves no state of its own (a resumed run's state is still there).
                if self.checkpoint_path and iteration > start:
                    losses += torch.stack(pending).float().cpu().tolist() if pending else []
                    pending = []
                    save_state(self.checkpoint_path, config, network, optimizer, generator, iteration, losses)
                break
            optimizer.zero_grad(set_to_none=True)
            if self.companions:
                companions.set_alphas(self._companion_alphas(iteration))
            loss = objective.loss()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            pending.append(loss.detach())
            iteration += 1
            if iteration % self.progress_every == 0 or iteration == config.iterations:
                losses += torch.stack(pending).float().cpu().tolist()  # the only host sync of the loop
                pending = []
                self._report(iteration, start, began, losses)
            if self.checkpoint_path and config.checkpoint_every and iteration % config.checkpoint_every == 0:
                losses += torch.stack(pending).float().cpu().tolist() if pending else []
                pending = []
                save_state(self.checkpoint_path, config, network, optimizer, generator, iteration, losses)
        if pending:
            losses += torch.stack(pending).float().cpu().tolist()
        if self.companions:  # the effect score and held-out loss measure the slider alone
            companions.set_alphas([0.0] * len(self.companions))

        effect = None
        if iteration > 0 and self.effect_samples > 0:
            effect = measure_effect(objective, run, seed=held_out_seed, samples=self.effect_samples)
        held_out = (loss_before, self.held_out_loss(objective, run, held_out_seed)) if self.held_out_draws else None
        if config.mode == "image" and config.estimate_start and self.start_samples and iteration > 0:
            # An image slider has no prompt pair to probe the base model with: probe the slider it became.
            self.start_estimate = self._estimate_slider_start(run)
        result_network = SliderNetwork(
            name=config.name,
            unet={path: LoraModule(m.down.detach().float().cpu().clone(), m.up.detach().float().cpu().clone(), m.alpha)
                  for path, m in network.unet.items()},
            arch=frozenset({detect_model_arch(backend.unet)}),
        )
        return TrainResult(result_network, config, iteration, cancelled, losses, effect, held_out, self.start_estimate,
                           self.trained_from)

    def _start_to_train_from(self) -> float:
        """The start known before training (a text slider's estimate, else ``default_start``) when
        ``train_from_start``; an image slider's estimate comes after training and takes no part."""
        return saved_start(self.start_estimate, self.config) if self.config.train_from_start else 0.0

    def _estimate_start(self, latent_shape: tuple[int, int, int], autocast_dtype) -> StartEstimate:
        backend, config = self.backend, self.config

        def predict(x_t, t, cond):
            with autocast_context(backend.device, autocast_dtype):
                return backend.predict_eps(x_t, t, cond)

        generator = torch.Generator().manual_seed(config.seed + START_SEED_OFFSET)
        return estimate_start(predict, backend.encode_prompts, backend.alphas_cumprod, config.prompts, latent_shape,
                              generator, samples=self.start_samples, guidance=config.sampling_guidance)

    def _estimate_slider_start(self, run: TrainingRun) -> StartEstimate:
        backend, config = self.backend, self.config

        def predict(x_t, t, cond, alphas):
            run.set_alpha(alphas)
            with run.autocast():
                return run.predict(x_t, t, cond)

        generator = torch.Generator().manual_seed(config.seed + START_SEED_OFFSET)
        try:
            return estimate_slider_start(predict, backend.encode_prompts, backend.alphas_cumprod, config.image_prompt,
                                         max(config.scales), run.latent_shape, generator, samples=self.start_samples,
                                         guidance=config.sampling_guidance)
        finally:
            run.set_alpha(torch.tensor(0.0))

    def held_out_loss(self, objective, run: TrainingRun, seed: int) -> float:
        """Mean objective loss over fixed draws (the same draws for every call with the same seed)."""
        draws = self.held_out_draws
        training_generator = run.generator
        run.generator = torch.Generator().manual_seed(seed)
        try:
            with torch.no_grad():
                return sum(float(objective.loss()) for _ in range(draws)) / draws
        finally:
            run.generator = training_generator

    def _report(self, iteration: int, start: int, began: float, losses: list[float]) -> None:
        if self.on_progress is None:
            return
        elapsed = time.perf_counter() - began
        rate = (iteration - start) / elapsed if elapsed > 0 else 0.0
        recent = losses[-self.progress_every:]
        eta = (self.config.iterations - iteration) / rate if rate > 0 else float("inf")
        self.on_progress(TrainProgress(iteration, self.config.iterations, sum(recent) / len(recent), rate, eta))
