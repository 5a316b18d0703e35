"""The denoising loop's no-grad UNet calls replayed as CUDA graphs.

Producing a training latent takes k ≈ 25 UNet calls of two rows; each is a few milliseconds of GPU
work but hundreds of small kernels, so launching them from Python is what the official loop spends
its time on. A graph records one call's kernels once and replays them with one launch.

A graph reads and writes fixed addresses: inputs are copied into static buffers before each replay
and the output is a static buffer (valid until the next replay). The weights it reads are the model's
own tensors, so slider deltas merged into them *in place* (``weight_merge``) are seen by every
replay; forward hooks are not (they are Python: a replay repeats only the kernels they launched during
capture), so the trainer replays only while the slider is merged and its hooks are idle (α = 0).

Capture is tried once per input shape; any failure (an operation a graph can't hold, an old
driver) falls back to ordinary calls for the rest of the run, with the reason kept for the report.
Each graph is checked against ordinary calls twice: on the inputs it was captured with, and on the
next, different inputs (a value baked into the graph, like a timestep read on the host, only shows
there). Either differing by more than a trace (``REPLAY_TOLERANCE``) turns graphs off, so a graph
that would compute something else is never used.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable

import torch

# A replay runs the very kernels an ordinary call runs, so it gives the same result: measured bitwise equal
# (H200, SD1.5 and SDXL, bf16), once the timestep embedding is computed bit for bit as the model's own
# (``capturable_timestep_embedding``). Before that, one differing bit in the embedding grew through a bf16
# UNet into a 1.5e-2 relative difference: the size of all bf16 rounding (a timestep 100 off moved ε by 0.16 on
# the random-weight SD1.5, so a small baked-in error hides under a loose tolerance). So the check is tight: a
# replay further than this (relative L2) from an ordinary call is not used, whatever the precision; at worst a setup whose kernels differ under capture
# trains without graphs.
REPLAY_TOLERANCE = 1e-3


def relative_error(value: torch.Tensor, expected: torch.Tensor) -> float:
    value, expected = value.float(), expected.float()
    return float((value - expected).norm() / expected.norm().clamp_min(1e-12))


def _flatten(value) -> list[torch.Tensor]:
    """The tensors of a conditioning (a tensor, or dicts/lists of them), in a fixed order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in _flatten(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flatten(item)]
    return []


def _signature(value) -> tuple:
    return tuple((tuple(t.shape), t.dtype, t.device) for t in _flatten(value))


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000, repeat_only: bool = False,
                       freqs: torch.Tensor | None = None) -> torch.Tensor:
    """ldm's sinusoidal timestep embedding, with no host-to-device copy.

    ldm's and sgm's own versions build the frequencies on the CPU and copy them over, which a graph
    can't record; the webui's replacement for ldm's (and ComfyUI's) builds them on the GPU. Given
    ``freqs`` (already on the device) this uses them, else it makes them on the device."""
    if repeat_only:
        return timesteps[:, None].repeat(1, dim)
    half = dim // 2
    if freqs is None:
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def host_freqs(dim: int, max_period: int = 10000) -> torch.Tensor:
    """The frequencies as ldm and sgm make them: on the CPU (its ``exp`` may round differently from the GPU's)."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)


@contextlib.contextmanager
def capturable_timestep_embedding(unet: torch.nn.Module, constants: dict):
    """The UNet module's ``timestep_embedding`` made capturable for the duration.

    Outside a capture the original runs; the first time for each setting, it is also matched against
    the two capturable ways of computing it (frequencies made on the host and kept on the device, or
    made on the device), and the one that reproduces it bit for bit is kept, with the result's dtype
    (the webui wraps it to cast to the UNet's dtype). Inside a capture that way runs. Bitwise: a replay
    must compute what an ordinary call computes, or the replay check could not be exact. The host-made
    frequencies go into ``constants``, which must outlive every replay (graphs read them by address)."""
    module = sys.modules.get(type(unet).__module__)
    original = getattr(module, "timestep_embedding", None)
    if original is None:
        yield
        return
    chosen: dict[tuple, tuple[torch.Tensor | None, torch.dtype]] = {}

    def replacement(timesteps, dim, max_period=10000, repeat_only=False):
        key = (dim, max_period, repeat_only, timesteps.dtype, timesteps.device)
        if not _capturing():
            result = original(timesteps, dim, max_period, repeat_only)
            if key not in chosen:
                chosen[key] = (_matching_freqs(result, timesteps, dim, max_period, repeat_only, constants),
                               result.dtype)
            return result
        freqs, dtype = chosen.get(key, (None, torch.float32))
        return timestep_embedding(timesteps, dim, max_period, repeat_only, freqs=freqs).to(dtype)

    module.timestep_embedding = replacement
    try:
        yield
    finally:
        module.timestep_embedding = original


def _matching_freqs(result: torch.Tensor, timesteps: torch.Tensor, dim: int, max_period: int, repeat_only: bool,
                    constants: dict) -> torch.Tensor | None:
    """Host-made frequencies on the device if they reproduce ``result`` exactly, else None (made on the device)."""
    if repeat_only:
        return None
    key = (dim, max_period, timesteps.device)
    if key not in constants:
        constants[key] = host_freqs(dim, max_period).to(timesteps.device)
    with_host_freqs = timestep_embedding(timesteps, dim, max_period, freqs=constants[key]).to(result.dtype)
    return constants[key] if torch.equal(with_host_freqs, result) else None


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class _Captured:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: list[torch.Tensor], output: torch.Tensor):
        self.graph = graph
        self.inputs = inputs
        self.output = output
        self.checked_on_new_inputs = False

    def replay(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        for static, value in zip(self.inputs, tensors, strict=True):
            static.copy_(value)
        self.graph.replay()
        return self.output


class GraphedCalls:
    """``call(x, t, cond)`` (no grad, fixed weights) replayed from CUDA graphs, one per input signature.

    ``call`` must be the whole computation, autocast included (it is entered inside the capture with
    autocast's cast cache off, as graphs need). Results are a static buffer: use them before the next
    call, or clone them.
    """

    def __init__(self, call: Callable, unet: torch.nn.Module, tolerance: float = REPLAY_TOLERANCE,
                 warmup: int = 2):
        self.call = call
        self.unet = unet
        self.warmup = warmup
        self.tolerance = tolerance
        self.disabled: str | None = None  # why graphs are off, once they are
        self.check_errors: list[float] = []  # each replay-vs-ordinary check's relative error
        self.replays = 0
        self._graphs: dict[tuple, _Captured] = {}
        self._pool = None  # one memory pool shared by every graph of this run
        self._constants: dict = {}  # tensors the graphs read besides their inputs (kept alive with them)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        if self.disabled is not None:
            return self.call(x, t, cond)
        key = (_signature(x), _signature(t), _signature(cond))
        captured = self._graphs.get(key)
        if captured is None:
            try:
                captured = self._graphs[key] = self._capture(x, t, cond)
            except Exception as error:  # noqa: BLE001 - any failure means: run without graphs
                self.disabled = f"capture failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
                torch.cuda.synchronize()
                return self.call(x, t, cond)
            if self.disabled is not None:
                return self.call(x, t, cond)
            self.replays += 1
            return captured.output
        self.replays += 1
        output = captured.replay([x, t, *_flatten(cond)])
        if not captured.checked_on_new_inputs:
            captured.checked_on_new_inputs = True
            expected = self.call(x, t, cond)
            if not self._agrees(output, expected):
                return expected
        return output

    def _agrees(self, replayed: torch.Tensor, expected: torch.Tensor) -> bool:
        """Records the check; turns graphs off (with the reason) when the replay is off by more than rounding."""
        error = relative_error(replayed, expected)
        self.check_errors.append(error)
        if math.isfinite(error) and error <= self.tolerance:
            return True
        self.disabled = f"replay differs from an ordinary call (relative error {error:.2e} > {self.tolerance:.1e})"
        return False

    def _capture(self, x: torch.Tensor, t: torch.Tensor, cond) -> _Captured:
        static_x, static_t = x.clone(), t.clone()
        static_cond = _clone_structure(cond)
        inputs = [static_x, static_t, *_flatten(static_cond)]
        graph = torch.cuda.CUDAGraph()
        with capturable_timestep_embedding(self.unet, self._constants):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the default stream, as capture wants
                for _ in range(self.warmup):
                    expected = self.call(static_x, static_t, static_cond)
            torch.cuda.current_stream().wait_stream(side)
            expected = expected.clone()
            # thread_local: CUDA work of other threads (the webui serving a request) must not break the capture.
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                output = self.call(static_x, static_t, static_cond)
        self._pool = graph.pool()
        captured = _Captured(graph, inputs, output)
        self._agrees(captured.replay(inputs), expected)
        return captured


def _clone_structure(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: _clone_structure(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_structure(item) for item in value)
    return value
