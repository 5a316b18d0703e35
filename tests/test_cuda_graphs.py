"""CUDA-graph replay of the denoising calls: the parts a CPU can check, and the whole on a GPU when there is one."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from ldm.modules.diffusionmodules.util import timestep_embedding as ldm_timestep_embedding

from bench.common.tiny_models import build_unet
from bench.common.toy_diffusion import make_toy_model
from lib_sliders.apply.engine import ActiveSlider, SliderEngine
from lib_sliders.errors import SliderError
from lib_sliders.training import cuda_graphs
from lib_sliders.training.backend import ModelBackend
from lib_sliders.training.config import TextPrompt, TrainConfig
from lib_sliders.training.text_objective import TextObjective
from lib_sliders.training.trainer import SliderTrainer, new_slider_network
from lib_sliders.training.training_run import TrainingRun

AGE = TextPrompt(target="person", positive="person, very old", negative="person, very young", guidance=2.0)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dim", [320, 7])
@pytest.mark.parametrize("repeat_only", [False, True])
def test_gpu_side_timestep_embedding_equals_ldms(dim, repeat_only):
    timesteps = torch.tensor([0, 1, 499, 999])
    ours = cuda_graphs.timestep_embedding(timesteps, dim, repeat_only=repeat_only)
    assert torch.equal(ours, ldm_timestep_embedding(timesteps, dim, repeat_only=repeat_only))


def test_capturable_timestep_embedding_calls_the_original_outside_a_capture_and_puts_it_back():
    unet = build_unet("sd1")
    module = sys.modules[type(unet).__module__]
    original, calls = module.timestep_embedding, []

    def counting(timesteps, dim, max_period=10000, repeat_only=False):
        calls.append(dim)
        return original(timesteps, dim, max_period, repeat_only).half()  # a webui-style cast of the result

    module.timestep_embedding = counting
    try:
        with cuda_graphs.capturable_timestep_embedding(unet, {}):
            assert module.timestep_embedding is not counting
            result = module.timestep_embedding(torch.tensor([10, 20]), 32)
        assert calls == [32] and result.dtype == torch.float16
        assert module.timestep_embedding is counting
    finally:
        module.timestep_embedding = original


def test_capture_uses_host_made_frequencies_only_when_they_reproduce_the_models_embedding():
    timesteps = torch.tensor([3, 400, 999])
    constants = {}
    ldms = ldm_timestep_embedding(timesteps, 320)
    freqs = cuda_graphs._matching_freqs(ldms, timesteps, 320, 10000, False, constants)
    assert freqs is constants[(320, 10000, timesteps.device)]  # kept alive for the graphs that read it
    assert torch.equal(cuda_graphs.timestep_embedding(timesteps, 320, freqs=freqs), ldms)
    # An embedding the host-made frequencies don't reproduce bit for bit: made on the device instead.
    other = ldms.clone()
    other[1, 7] = torch.nextafter(other[1, 7], torch.tensor(2.0))
    assert cuda_graphs._matching_freqs(other, timesteps, 320, 10000, False, constants) is None


def test_merging_for_sampling_writes_into_the_same_weight_storage():
    # A graph reads weights by address: the merged slider must land in the very tensors it captured.
    unet = build_unet("sd1")
    config = TrainConfig(name="age", prompts=[AGE], iterations=1, resolution=64, rank=4)
    network = new_slider_network(unet, config, torch.Generator().manual_seed(0), "cpu")
    for module in network.unet.values():
        module.up.data.normal_()
    weights = {path: unet.get_submodule(path).weight for path in network.unet}
    addresses = {path: w.data_ptr() for path, w in weights.items()}
    before = {path: w.clone() for path, w in weights.items()}
    engine = SliderEngine(unet)
    with torch.no_grad():
        engine.apply([ActiveSlider(network, 1.0)], mode="merged")
        changed = [path for path, w in weights.items() if not torch.equal(w, before[path])]
        assert {path: unet.get_submodule(path).weight.data_ptr() for path in weights} == addresses
        engine.apply([ActiveSlider(network, 0.0)], mode="hooks")
        engine.clear()
    assert len(changed) == len(weights)
    assert all(torch.equal(unet.get_submodule(path).weight, before[path]) for path in weights)
    assert {path: unet.get_submodule(path).weight.data_ptr() for path in weights} == addresses


def test_cuda_graphs_on_a_cpu_model_are_refused_by_name():
    backend = ModelBackend(make_toy_model("sd1"))
    config = TrainConfig(name="age", prompts=[AGE], iterations=1, resolution=64, rank=4)
    with pytest.raises(SliderError, match="cuda_graphs"):
        SliderTrainer(backend, config, cuda_graphs=True)


def test_cpu_training_counts_every_unet_call():
    backend = ModelBackend(make_toy_model("sd1"))
    config = TrainConfig(name="age", prompts=[AGE], iterations=2, resolution=64, rank=4, max_denoising_steps=4)
    trainer = SliderTrainer(backend, config, effect_samples=0)
    trainer.train()
    # Each iteration: k ∈ 1..3 denoising calls, one frozen call, one trainable call.
    assert 2 * 3 <= trainer.stats.unet_calls <= 2 * 5
    assert trainer.stats.graph_replays == 0 and trainer.stats.graphs == "off"


@pytest.fixture
def exact_cuda_kernels():
    """fp32 without TF32 and with deterministic cuDNN: graph and eager differences then mean a real mismatch."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved


def _sampling_run(backend, network, graphs: bool):
    engine = SliderEngine(backend.unet)
    engine.apply([ActiveSlider(network, 0.0)])
    config = TrainConfig(name="age", prompts=[AGE], iterations=1, resolution=64, rank=4, max_denoising_steps=8,
                         precision="fp32")
    run = TrainingRun(backend, engine, torch.Generator().manual_seed(0), (4, 8, 8), None, merge_for_sampling=True,
                      cuda_graphs=graphs)
    return engine, run, TextObjective(backend, config, run)


class _RecordingGraphs:
    """Stands in for ``GraphedCalls`` on a CPU: counts the calls routed to replays and makes them ordinary."""

    def __init__(self, backend):
        self.backend, self.replays, self.disabled, self.check_errors = backend, 0, None, []

    def __call__(self, x_t, t, cond):
        self.replays += 1
        return self.backend.predict_eps(x_t, t, cond)


def test_denoising_before_a_sliders_start_goes_to_the_graphs_too():
    # With the slider off (α 0) the sampling calls are the bare UNet's, as replayable as the merged ones.
    backend = ModelBackend(make_toy_model("sd1"))
    config = TrainConfig(name="age", prompts=[AGE], iterations=1, resolution=64, rank=4, max_denoising_steps=8,
                         precision="fp32")
    network = new_slider_network(backend.unet, config, torch.Generator().manual_seed(0), backend.device)
    engine = SliderEngine(backend.unet)
    engine.apply([ActiveSlider(network, 0.0)])
    try:
        run = TrainingRun(backend, engine, torch.Generator().manual_seed(0), (4, 8, 8), None, merge_for_sampling=True)
        run.graphs = _RecordingGraphs(backend)
        objective = TextObjective(backend, config, run, start=0.5)
        assert objective.slider_from == 4
        objective.denoise(run.randn(1), objective.entries[:1], [6], slider_alpha=1.0)
        assert run.graphs.replays == 6  # 4 steps with the slider off, 2 with it merged
        objective.denoise(run.randn(1), objective.entries[:1], [3], slider_alpha=0.0)
        assert run.graphs.replays == 6 + 3
    finally:
        engine.clear()


@needs_cuda
@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_graph_replays_denoise_as_ordinary_calls_do_and_see_each_new_merge(arch, exact_cuda_kernels):
    model = make_toy_model(arch).cuda()
    backend = ModelBackend(model)
    config = TrainConfig(name="age", prompts=[AGE], iterations=1, resolution=64, rank=4)
    network = new_slider_network(backend.unet, config, torch.Generator().manual_seed(0), backend.device)
    with torch.no_grad():
        for module in network.unet.values():
            module.up.normal_(std=0.05)
    results = {}
    for graphs in (True, False):
        engine, run, objective = _sampling_run(backend, network, graphs)
        noise = run.randn(1, torch.Generator().manual_seed(5))
        # Alternate α: each denoise merges anew into the same weights, which the replays must see (α 0: none).
        results[graphs] = [objective.denoise(noise, objective.entries[:1], [6], alpha)[0][0]
                           for alpha in (1, 0, -1, 2)]
        engine.clear()
        if graphs:
            assert run.stats.graphs.startswith("on"), run.stats.graphs
            assert run.stats.graph_replays == 4 * 6 and run.graphs.replays == 4 * 6
    for with_graphs, without, other_alpha in zip(results[True], results[False], results[False][1:] + results[False][:1],
                                                 strict=True):
        mismatch = (with_graphs - without).norm() / without.norm()
        alpha_effect = (other_alpha - without).norm() / without.norm()
        # Far below the slider's own effect: a replay that missed the new merge would be off by about that.
        assert mismatch < 1e-4 and mismatch < alpha_effect / 100, (float(mismatch), float(alpha_effect))


class _HostScale(torch.nn.Module):
    """Reads a Python float at call time: a graph bakes in the value it saw when captured."""

    def __init__(self):
        super().__init__()
        self.scale = 1.0

    def forward(self, x, t, cond):
        return x * self.scale + cond


@needs_cuda
def test_a_graph_that_bakes_in_a_value_is_caught_on_new_inputs_and_never_used():
    module = _HostScale()
    graphs = cuda_graphs.GraphedCalls(module, module, tolerance=1e-3)
    x, t, cond = torch.ones(2, 3, device="cuda"), torch.zeros(2, device="cuda"), torch.zeros(2, 3, device="cuda")
    assert torch.equal(graphs(x, t, cond), x)  # captured and checked on the same inputs: agrees
    module.scale = 3.0
    assert torch.equal(graphs(2 * x, t, cond), 6 * x)  # the replay (2·x·1) is refused: the ordinary call's result
    assert graphs.disabled is not None and "relative error" in graphs.disabled
    assert torch.equal(graphs(x, t, cond), 3 * x)  # off for the rest of the run


@needs_cuda
def test_a_faithful_graph_is_checked_once_on_new_inputs_then_replayed():
    module = _HostScale()
    graphs = cuda_graphs.GraphedCalls(module, module, tolerance=1e-3)
    x, t, cond = torch.ones(2, 3, device="cuda"), torch.zeros(2, device="cuda"), torch.zeros(2, 3, device="cuda")
    for scale in (1.0, 2.0, 5.0):
        assert torch.equal(graphs(scale * x, t, cond + 1), scale * x + 1)
    assert graphs.disabled is None and graphs.replays == 3 and graphs.check_errors == [0.0, 0.0]


@needs_cuda
def test_training_with_graphs_replays_the_denoising_calls_and_counts_them():
    backend = ModelBackend(make_toy_model("sd1").cuda())
    config = TrainConfig(name="age", prompts=[AGE], iterations=4, resolution=64, rank=4, max_denoising_steps=8,
                         lr=1e-3, seed=3, precision="fp32")
    trainer = SliderTrainer(backend, config, effect_samples=0)  # graphs on by default on CUDA
    result = trainer.train()
    stats = trainer.stats
    assert stats.graphs.startswith("on"), stats.graphs
    assert 0 < stats.graph_replays == stats.unet_calls - 2 * config.iterations
    assert all(np.isfinite(result.losses))
