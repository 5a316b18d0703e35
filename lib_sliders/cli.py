"""Command line: ``python -m lib_sliders inspect PATH [--json]`` and ``convert SRC DST``.

Bad input ends with one line on stderr, ``error: <path>: <problem>``, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch

from . import __version__
from .errors import SliderError, SliderFileError
from .files.arch import ARCH_LABELS, ARCHES
from .files.layout import unet_layout
from .files.lora import SliderNetwork
from .files.metadata import KEPT_PREFIXES, prediction_type_of, slider_info
from .files.slider_file import arch_label, load_slider, save_slider
from .prompt.presets import PRESETS, layer_kind, preset_includes

EXIT_BAD_INPUT = 2
DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}
# Regenerated on conversion even though they match KEPT_PREFIXES.
_REGENERATED = ("sliders.version", "sliders.arch")


def _one_or_list(values: set):
    ordered = sorted(values)
    return ordered[0] if len(ordered) == 1 else ordered


def matching_preset(network: SliderNetwork) -> str | None:
    """The layer preset whose full-size layer set is exactly the slider's UNet modules, if any."""
    if not network.unet or not network.arch:
        return None
    layers = unet_layout(next(a for a in ARCHES if a in network.arch))
    modules = set(network.unet)
    return next((p for p in PRESETS if modules == {path for path in layers if preset_includes(p, path)}), None)


def describe(network: SliderNetwork) -> dict:
    """A JSON-ready summary of a loaded slider."""
    kinds = Counter(layer_kind(path) or "other" for path in network.unet)
    info = slider_info(network.metadata)
    return {
        "file": network.source,
        "name": network.name,
        "arch": [a for a in ARCHES if a in network.arch],
        "arch_label": arch_label(network.arch),
        "rank": _one_or_list({m.rank for m in network.all_modules()}),
        "alpha": _one_or_list({float(m.alpha) for m in network.all_modules()}),
        "modules": {
            "unet": len(network.unet),
            **{kind: kinds.get(kind, 0) for kind in ("attn1", "attn2", "conv", "other")},
            "text": sum(len(encoder) for encoder in network.text),
        },
        "preset": matching_preset(network),
        "text_encoders": [len(encoder) for encoder in network.text],
        "alpha_range": list(info.alpha_range),
        "default_start": info.default_start,
        "metadata": dict(network.metadata),
    }


def _pretty_value(value: str) -> str:
    """Long JSON objects/lists indented under their key; everything else as stored."""
    if value[:1] in "{[" and len(value) > 60:
        try:
            return json.dumps(json.loads(value), indent=2, ensure_ascii=False).replace("\n", "\n  ")
        except ValueError:
            pass
    return value


def _format_text(summary: dict) -> str:
    def join(value):
        return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)

    modules = summary["modules"]
    unet = f"{modules['unet']} modules"
    if summary["preset"]:
        unet += f" (preset {summary['preset']})"
    unet += f": attn1 {modules['attn1']}, attn2 {modules['attn2']}, conv {modules['conv']}, other {modules['other']}"
    if any(summary["text_encoders"]):
        text = ", ".join(f"encoder {i + 1}: {n}" for i, n in enumerate(summary["text_encoders"]))
    else:
        text = "none"
    low, high = summary["alpha_range"]
    lines = [
        f"file:          {summary['file']}",
        f"name:          {summary['name']}",
        f"architecture:  {summary['arch_label']} ({', '.join(summary['arch'])})",
        f"rank:          {join(summary['rank'])}",
        f"alpha:         {join(summary['alpha'])}",
        f"UNet:          {unet}",
        f"text encoder:  {text}",
        f"slider range:  {low:g} to {high:g}, default start {summary['default_start']:g}",
    ]
    metadata = summary["metadata"]
    lines.append("metadata:" if metadata else "metadata:      none")
    lines += [f"  {key}: {_pretty_value(metadata[key])}" for key in sorted(metadata)]
    return "\n".join(lines)


def _inspect(args) -> int:
    summary = describe(load_slider(args.path))
    print(json.dumps(summary, ensure_ascii=False) if args.json else _format_text(summary))
    return 0


def _resolve_arch(network: SliderNetwork, requested: str | None) -> str:
    source = network.source
    if requested is not None:
        if requested not in network.arch:
            raise SliderFileError(source, f"made for {arch_label(network.arch)}, not {ARCH_LABELS[requested]}")
        return requested
    if len(network.arch) > 1:
        choices = " or ".join(f"--arch {a}" for a in ARCHES if a in network.arch)
        raise SliderFileError(source, f"fits {arch_label(network.arch)}; pass {choices}")
    return next(iter(network.arch))


def _convert(args) -> int:
    destination = Path(args.dst)
    if destination.suffix.lower() != ".safetensors":
        raise SliderFileError(destination, "output must be a .safetensors file")
    if destination.exists() and not args.overwrite:
        raise SliderFileError(destination, "already exists (pass --overwrite to replace it)")
    network = load_slider(args.src)
    arch = _resolve_arch(network, args.arch)
    kept = {key: value for key, value in network.metadata.items()
            if key.startswith(KEPT_PREFIXES) and key not in _REGENERATED}
    info = slider_info(network.metadata)
    network.name = destination.stem
    save_slider(
        network, destination, arch=arch, dtype=DTYPES[args.dtype], prediction_type=prediction_type_of(network.metadata),
        alpha_range=info.alpha_range, default_start=info.default_start, extra_metadata=kept, overwrite=args.overwrite,
    )
    count = sum(1 for _ in network.all_modules())
    print(f"wrote {destination} ({count} modules, {ARCH_LABELS[arch]}, {args.dtype})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_sliders", description="Inspect and convert Concept Slider files.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="summarise a slider file (arch, rank, modules, metadata)")
    inspect.add_argument("path", help=".safetensors, .pt, .ckpt or .bin slider/LoRA file")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(run=_inspect)

    convert = commands.add_parser("convert", help="rewrite a slider as a kohya-format .safetensors")
    convert.add_argument("src", help="input slider (.safetensors, .pt, .ckpt, .bin)")
    convert.add_argument("dst", help="output .safetensors")
    convert.add_argument("--arch", choices=ARCHES, help="target model when the file fits several (sd1/sd2)")
    convert.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    convert.add_argument("--dtype", choices=tuple(DTYPES), default="fp16", help="tensor precision (default fp16)")
    convert.set_defaults(run=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SliderError as error:
        message = " ".join(str(error).split("\n"))
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into e.g. `head`: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
