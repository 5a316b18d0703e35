"""The training loop: a slider trained on the live model, which is left exactly as it was found.

The slider is attached through the core engine's hooks (never merged into the model's weights), its
weights are fp32 masters (autocast runs the UNet in half precision when asked), every random draw
comes from one seeded generator (so a run is deterministic, and a resumed run repeats the
uninterrupted one bit for bit), and a cooperative ``should_stop`` ends the run early with what was
learned so far.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace

import safetensors
import safetensors.torch
import torch

from .. import __version__
from ..apply.engine import ActiveSlider, SliderEngine
from ..apply.weight_merge import Contribution, WeightMerger
from ..errors import SliderError
from ..files.arch import detect_model_arch
from ..files.lora import LoraModule, SliderNetwork
from ..files.slider_file import save_slider
from ..prompt.presets import select_layers
from .backend import DiffusionBackend, resolution_step, to_device
from .checkpointing import gradient_checkpointing
from .config import ConfigError
from .cuda_graphs import GraphedCalls
from .effect import EffectScore, measure_effect
from .image_objective import ImageObjective
from .offload import modules_on_cpu
from .start_estimate import StartEstimate, estimate_slider_start, estimate_start
from .text_objective import TextObjective

STATE_FORMAT = "sliders-training-state/2"
EFFECT_SEED_OFFSET = 1_000_003  # held-out draws never coincide with training draws
START_SEED_OFFSET = 2_000_029  # the start probe's noise likewise
COMPANION_SEED_OFFSET = 3_000_017  # the companions' α, drawn per iteration from their own seed
RESUMABLE_CHANGES = ("iterations", "estimate_start", "default_start", "alpha_range")


@dataclass(frozen=True)
class TrainProgress:
    iteration: int  # iterations done
    total: int
    loss: float  # mean loss since the previous report
    its_per_second: float
    eta_seconds: float


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


@dataclass
class TrainStats:
    """What the run's UNet calls cost, for progress reports and benchmarks."""

    unet_calls: int = 0
    unet_rows: int = 0
    graph_replays: int = 0  # calls among ``unet_calls`` that were CUDA-graph replays
    graphs: str = "off"  # "on", "off", or why they were turned off


class _Run:
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
        return _autocast(self.backend.device, self.autocast_dtype)

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


def _autocast_dtype(precision: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        if model_dtype != torch.float32:
            raise SliderError("precision: fp32 training needs a full-precision model (start the webui with --no-half)")
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
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


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; nothing when ``dtype`` is None (fp32 runs)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


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
        self.merge_for_sampling = backend.device.type == "cuda" if merge_for_sampling is None else merge_for_sampling
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
        run = _Run(backend, engine, generator, (channels, side, side), autocast_dtype, self.merge_for_sampling,
                   cuda_graphs=self.cuda_graphs, stats=self.stats, merge_backup_device=self.merge_backup_device)
        kind = TextObjective if config.mode == "text" else ImageObjective
        objective = kind(backend, config, run, start=self.trained_from)
        parameters = _parameters(network)
        optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler(backend.device.type, enabled=run.autocast_dtype == torch.float16)

        start, losses = 0, []
        if resume_from is not None:
            start, losses = self._load_state(resume_from, network, optimizer, generator)
        with modules_on_cpu(backend.encoders(), enabled=self.offload_encoders):  # prompts and images are encoded
            return self._loop(run, objective, network, optimizer, scaler, start, losses, companions)

    def _companion_alphas(self, iteration: int) -> list[float]:
        # Seeded by the iteration, so that a resumed run draws what the uninterrupted one would have.
        generator = torch.Generator().manual_seed(self.config.seed + COMPANION_SEED_OFFSET + iteration)
        picks = torch.randint(0, len(self.companion_alphas), (len(self.companions),), generator=generator)
        return self.companion_alphas[picks].tolist()

    def _loop(self, run: _Run, objective, network: SliderNetwork, optimizer, scaler, start: int,
              losses: list[float], companions: SliderEngine) -> TrainResult:
        backend, config, generator = self.backend, self.config, run.generator
        held_out_seed = config.seed + EFFECT_SEED_OFFSET
        loss_before = self.held_out_loss(objective, run, held_out_seed) if self.held_out_draws else None

        cancelled, pending, began = False, [], time.perf_counter()
        iteration = start
        while iteration < config.iterations:
            if self.should_stop():
                cancelled = True
                if self.checkpoint_path:  # so that "resume" continues exactly where the cancel stopped
                    losses += torch.stack(pending).float().cpu().tolist() if pending else []
                    pending = []
                    self._save_state(network, optimizer, generator, iteration, losses)
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
                self._save_state(network, optimizer, generator, iteration, losses)
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
            with _autocast(backend.device, autocast_dtype):
                return backend.predict_eps(x_t, t, cond)

        generator = torch.Generator().manual_seed(config.seed + START_SEED_OFFSET)
        return estimate_start(predict, backend.encode_prompts, backend.alphas_cumprod, config.prompts, latent_shape,
                              generator, samples=self.start_samples, guidance=config.sampling_guidance)

    def _estimate_slider_start(self, run: _Run) -> StartEstimate:
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

    def held_out_loss(self, objective, run: _Run, seed: int) -> float:
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

    # ----- resumable checkpoints ----------------------------------------------------------------
    # A safetensors file (tensors) + JSON metadata (everything else): no pickle at all, so the webui's
    # pickle checker (which rejects newer torch zip entries) and weights_only loading never come into it.
    def _save_state(self, network: SliderNetwork, optimizer, generator: torch.Generator, iteration: int,
                    losses: list[float]) -> None:
        tensors = {"generator": generator.get_state()}
        for path, module in network.unet.items():
            tensors[f"weights/{path}/down"] = module.down.detach().cpu().contiguous()
            tensors[f"weights/{path}/up"] = module.up.detach().cpu().contiguous()
        optimizer_state = optimizer.state_dict()
        per_param = {}
        for index, values in optimizer_state["state"].items():
            per_param[str(index)] = sorted(values)
            for key, value in values.items():
                tensors[f"optimizer/{index}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        state = {"iteration": iteration, "config": self.config.to_dict(), "losses": list(losses),
                 "param_groups": optimizer_state["param_groups"], "optimizer_keys": per_param}
        metadata = {"format": STATE_FORMAT, "state": json.dumps(state)}
        directory = os.path.dirname(os.path.abspath(self.checkpoint_path))
        handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        os.close(handle)
        try:
            safetensors.torch.save_file(tensors, temporary, metadata=metadata)
            os.replace(temporary, self.checkpoint_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _resumable_changes(self) -> tuple[str, ...]:
        if self.config.train_from_start:  # the start decides which steps train
            return tuple(k for k in RESUMABLE_CHANGES if k not in ("estimate_start", "default_start"))
        return RESUMABLE_CHANGES

    def _load_state(self, path, network: SliderNetwork, optimizer, generator: torch.Generator):
        try:
            with safetensors.safe_open(str(path), framework="pt") as file:
                metadata = file.metadata() or {}
                tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 — not a dict
            state = json.loads(metadata.get("state", "null"))
        except Exception as error:
            raise SliderError(f"{path}: not a training checkpoint ({error})") from None
        if metadata.get("format") != STATE_FORMAT or not isinstance(state, dict):
            raise SliderError(f"{path}: not a training checkpoint")
        current = self.config.to_dict()
        # A field newer than the checkpoint takes its default there (what the run that saved it did).
        saved = {**type(self.config)(name=self.config.name).to_dict(), **state["config"]}
        for key in self._resumable_changes():  # settings that don't change what the loop does
            saved.pop(key, None)
            current.pop(key, None)
        if saved != current:
            changed = sorted(k for k in current if saved.get(k) != current.get(k))
            raise SliderError(f"{path}: checkpoint was made with different settings ({', '.join(changed)})")
        with torch.no_grad():
            for path_, module in network.unet.items():
                module.down.copy_(tensors[f"weights/{path_}/down"])
                module.up.copy_(tensors[f"weights/{path_}/up"])
        groups = state["param_groups"]
        for group in groups:
            if isinstance(group.get("betas"), list):
                group["betas"] = tuple(group["betas"])
        optimizer.load_state_dict({
            "state": {int(index): {key: tensors[f"optimizer/{index}/{key}"] for key in keys}
                      for index, keys in state["optimizer_keys"].items()},
            "param_groups": groups,
        })
        generator.set_state(tensors["generator"])
        return int(state["iteration"]), list(state["losses"])


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
