"""UNet forward cost of applied sliders: hook path (per-row α) and merged path, plus merge/α-change times and
the fixed cost of one generation job (look the sliders up, check them, attach, take off).

Builds an SD1.5-sized LDM UNet (the webui's own ldm code, random weights) and rank-4 ``noxattn``
sliders (the official default: 150 layers each). Prints one table. ``--size tiny`` uses the tests'
tiny SD1 UNet instead (same module tree, small widths; 64 px by default), for smoke runs.

    python bench/apply_overhead.py                      # CPU: 128 px (16×16 latents), batch 2
    python bench/apply_overhead.py --device cuda --latent 64 --dtype fp16
    python bench/apply_overhead.py --size tiny --counts 0,1,2 --repeats 1   # seconds, for smoke tests

Needs the test dependencies (``stable-diffusion-sdkit`` for the ldm UNet).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # the repo root: bench.common, lib_sliders

from bench.common.random_sliders import random_slider  # noqa: E402
from bench.common.tiny_models import FULL_CONFIGS, TINY_CONFIGS, build_unet  # noqa: E402
from lib_sliders.apply.engine import ActiveSlider, SliderEngine  # noqa: E402
from lib_sliders.files.slider_file import save_slider  # noqa: E402
from lib_sliders.library.slider_library import SliderLibrary  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default: fp16 on cuda, fp32 on cpu")
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="the SD1.5-sized UNet, or the tests' tiny SD1 one")
    parser.add_argument("--latent", type=int, default=None,
                        help="latent side (64 = 512 px); default 64 cuda, 16 cpu (8 with --size tiny)")
    parser.add_argument("--batch", type=int, default=2, help="UNet rows per call (cond + uncond of one image = 2)")
    parser.add_argument("--counts", default="0,1,5,20,50", help="numbers of sliders to apply")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per cell (default 20 cuda, 3 cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--job-only", action="store_true", help="only the per-job figures (no forward timings)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("fp16" if cuda else "fp32")]
    tiny = args.size == "tiny"
    latent = args.latent or (8 if tiny else 64 if cuda else 16)
    repeats = args.repeats or (20 if cuda else 3)
    counts = [int(c) for c in args.counts.split(",")]
    torch.set_grad_enabled(False)

    unet = build_unet("sd1", tiny=tiny).to(device=device, dtype=dtype)
    context_dim = (TINY_CONFIGS if tiny else FULL_CONFIGS)["sd1"]["context_dim"]
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "x": torch.randn(args.batch, 4, latent, latent, generator=generator).to(device, dtype),
        "timesteps": torch.full((args.batch,), 500, device=device),
        "context": torch.randn(args.batch, 77, context_dim, generator=generator).to(device, dtype),
    }
    sliders = [random_slider(unet, "noxattn", rank=4, seed=i, name=f"s{i}") for i in range(max(*counts, 5))]
    if args.job_only:
        per_job_figures(unet, sliders, device, repeats)
        return
    engine = SliderEngine(unet)

    def forward():
        unet(**inputs)

    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; dtype {str(dtype).removeprefix('torch.')}; "
          f"{'tiny' if tiny else 'SD1.5-sized'} UNet; latent {latent}×{latent} ({latent * 8} px); batch {args.batch}; "
          f"sliders rank 4 noxattn ({len(sliders[0].unet) if sliders else 0} layers)")
    base = timed(forward, device, repeats)
    print(f"\n{'path':<28}{'sliders':>8}{'ms/forward':>12}{'overhead':>10}")
    print(f"{'none':<28}{0:>8}{base * 1e3:>12.1f}{'':>10}")
    for count in [c for c in counts if c > 0]:
        per_row = [torch.linspace(-2, 2, args.batch).tolist() for _ in range(count)]
        engine.apply([ActiveSlider(s, a) for s, a in zip(sliders[:count], per_row, strict=True)], mode="hooks")
        seconds = timed(forward, device, repeats)
        print(f"{'hooks, per-row α':<28}{count:>8}{seconds * 1e3:>12.1f}{(seconds / base - 1) * 100:>9.1f}%")
    for count in [c for c in counts if c > 0][:2]:
        engine.apply([ActiveSlider(s, 1.0) for s in sliders[:count]], mode="merged")
        seconds = timed(forward, device, repeats)
        print(f"{'merged, uniform α':<28}{count:>8}{seconds * 1e3:>12.1f}{(seconds / base - 1) * 100:>9.1f}%")
    for count in [c for c in counts if c > 1]:
        # The usual mix: one slider varied across the batch (a strip), the others fixed.
        strip = torch.linspace(-2, 2, args.batch).tolist()
        engine.apply([ActiveSlider(sliders[0], strip)] + [ActiveSlider(s, 1.0) for s in sliders[1:count]], mode="auto")
        seconds = timed(forward, device, repeats)
        print(f"{'auto, 1 per-row + rest fixed':<28}{count:>8}{seconds * 1e3:>12.1f}{(seconds / base - 1) * 100:>9.1f}%")
    engine.clear()

    print(f"\n{'operation':<44}{'ms':>8}")
    for count in (1, 5):
        active = [ActiveSlider(s, 1.0) for s in sliders[:count]]
        apply_ms = timed(lambda a=active: (engine.apply(a, mode="merged"), engine.clear()), device, repeats) * 1e3
        print(f"{f'merge + restore, {count} slider(s)':<44}{apply_ms:>8.1f}")
        engine.apply(active, mode="merged")
        values = iter(range(10**6))
        change_ms = timed(lambda c=count, v=values: engine.set_alphas([next(v) % 3 - 1.0] * c), device, repeats) * 1e3
        print(f"{f'α change, merged, {count} slider(s)':<44}{change_ms:>8.1f}")
        engine.apply([ActiveSlider(s, 1.0) for s in sliders[:count]], mode="hooks")
        change_ms = timed(lambda c=count, v=values: engine.set_alphas([next(v) % 3 - 1.0] * c), device, repeats) * 1e3
        print(f"{f'α change, hooks, {count} slider(s)':<44}{change_ms:>8.1f}")
        attach_ms = timed(lambda a=active: (engine.apply(a, mode="hooks"), engine.clear()), device, repeats) * 1e3
        print(f"{f'attach + remove hooks, {count} slider(s)':<44}{attach_ms:>8.1f}")
    engine.clear()
    per_job_figures(unet, sliders, device, repeats)


def per_job_figures(unet: torch.nn.Module, sliders: list, device: torch.device, repeats: int) -> None:
    """What a webui job costs besides sampling, as the runtime does it: the library's load and short hash, a new
    engine on the UNet, check, attach hooks, one step's α, take off. The files are fp16, as trained sliders are.

    "first job": a new library, so the files are read and hashed. "same sliders again": the library (and what it
    caches) is the one of the job before, which is the usual case: a user changing the prompt or α.
    """
    with tempfile.TemporaryDirectory() as folder:
        for i, slider in enumerate(sliders[:5]):
            save_slider(slider, os.path.join(folder, f"s{i}.safetensors"), arch="sd1", dtype=torch.float16)

        def job(library: SliderLibrary, count: int) -> None:
            engine = SliderEngine(unet)
            active = []
            for i in range(count):
                network = library.load(f"s{i}")
                library.short_hash(f"s{i}")
                engine.validate(network)
                active.append(ActiveSlider(network, 1.0))
            engine.apply(active, mode="hooks")
            engine.set_step(0, 20)
            engine.clear()

        print(f"\n{'one job, outside sampling':<44}{'ms':>8}")
        for count in (1, 5):
            first = timed(lambda c=count: job(SliderLibrary([folder]), c), device, repeats, warmup=0) * 1e3
            library = SliderLibrary([folder])
            again = timed(lambda c=count, lib=library: job(lib, c), device, repeats) * 1e3
            print(f"{f'first job, {count} slider(s)':<44}{first:>8.1f}")
            print(f"{f'same sliders again, {count} slider(s)':<44}{again:>8.1f}")


if __name__ == "__main__":
    main()
