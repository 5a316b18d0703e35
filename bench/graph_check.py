"""How far a CUDA-graph replay of one UNet call is from an ordinary call, next to ordinary calls' own spread.

The trainer replays its denoising calls as graphs only when the first replay is within
``cuda_graphs.REPLAY_TOLERANCE`` of an ordinary call. On the random-weight SD1.5 in bf16 the check
failed once (1.47e-2, H200, 2026-11-26). This prints, for each model and precision setting, the
relative L2 difference of:

* ``eager vs eager``: the same call twice on the default stream (0 for deterministic kernels);
* ``side stream``: an ordinary call on another stream (capture warms up on one);
* ``replay``: the graph replay (``GraphedCalls``' own check, after its warm-up) vs an ordinary call;
* ``replay, exact``: the same with TF32 off and deterministic cuDNN.

If ``replay`` ≈ ``replay, exact`` ≫ ``eager vs eager`` the graph computes something else (a bug);
if ``replay, exact`` is tiny, capture just picked other kernels and the tolerance can follow the dtype.

    python bench/graph_check.py --models sd15,sdxl          # needs CUDA and the test dependencies
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path[:0] = [os.path.dirname(__file__), os.path.join(os.path.dirname(__file__), "..")]

from train_speed import DTYPES, build_model, use_sdpa  # noqa: E402

from lib_sliders.training.backend import ModelBackend  # noqa: E402
from lib_sliders.training.cuda_graphs import GraphedCalls  # noqa: E402


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def inputs(backend: ModelBackend, resolution: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    side = resolution // 8
    x = torch.randn(2, 4, side, side, generator=generator).to(backend.device)
    t = torch.tensor([500, 500], device=backend.device)
    cond = backend.encode_prompts(["male person, very young", "male person"])
    return x, t, cond


def check(backend: ModelBackend, dtype: torch.dtype, resolution: int, exact: bool) -> dict[str, float]:
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not exact
    torch.backends.cudnn.deterministic = exact

    def call(x, t, cond):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32, cache_enabled=False):
            return backend.predict_eps(x, t, cond)

    x, t, cond = inputs(backend, resolution, seed=0)
    with torch.no_grad():
        first, second = call(x, t, cond).clone(), call(x, t, cond).clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            on_side = call(x, t, cond).clone()
        torch.cuda.current_stream().wait_stream(stream)
        graphs = GraphedCalls(call, backend.unet, tolerance=float("inf"))
        replay = graphs(x, t, cond).clone()
        x2, t2, cond2 = inputs(backend, resolution, seed=1)  # new inputs through the same graph
        replay2, eager2 = graphs(x2, t2, cond2).clone(), call(x2, t2, cond2)
    return {"eager vs eager": relative(second, first), "side stream": relative(on_side, first),
            "replay": relative(replay, first), "replay, new inputs": relative(replay2, eager2),
            "disabled": graphs.disabled or ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sd15")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--attention", choices=("sdp", "default"), default="sdp")
    args = parser.parse_args()
    dtype = DTYPES[args.dtype]
    print(f"device {torch.cuda.get_device_name()}; torch {torch.__version__}; weights {args.dtype}; "
          f"{args.resolution} px; attention {args.attention}")
    for name in args.models.split(","):
        model, description = build_model(name, "full", seed=0)
        model.to("cuda")
        model.model.to(dtype)
        model.cond_stage_model.to(dtype)
        if args.attention == "sdp":
            use_sdpa()
        backend = ModelBackend(model)
        for exact in (False, True):
            result = check(backend, dtype, args.resolution, exact)
            print(f"{name} {'exact' if exact else 'default'} kernels: "
                  + ", ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v!r}" for k, v in result.items()))
        del model, backend
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
