"""X/Y/Z plot cells: override α or start of sliders for one cell, wherever the slider comes from.

The plot's axis functions only record what a cell wants, in a new dict on the cell's copy of ``p``
(``p.sliders_override``; the copy is shallow, so the dict must never be shared). At ``Script.process``
``apply_overrides`` makes it real:

* a slider tagged in the prompts gets its tags rewritten in ``p.all_prompts`` (and hires prompts), so the
  image's infotext shows exactly what made it and pastes back to the same image;
* a slider from the UI rows / API args gets its request changed;
* a slider named by an axis but used nowhere is added as a request.

Keys of the override dict: ``alpha`` / ``start`` ({name: value}), ``axis_slider`` (name chosen by the
``[Sliders] slider`` axis), ``axis_alpha`` / ``axis_start`` (values for that slider, or, without one, for
every slider of the job).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from ..apply.job_plan import SliderRequest
from ..prompt.prompt_tags import NETWORK_NAME, RE_EXTRA_NET, AlphaSpec, TagError, format_tag, parse_slider_args

SameSlider = Callable[[str, str], bool]


def _exact(a: str, b: str) -> bool:
    return a == b


class _Targets:
    def __init__(self, override: dict, default_alpha: float):
        self.alphas: dict[str, float] = dict(override.get("alpha") or {})
        self.starts: dict[str, float] = dict(override.get("start") or {})
        self.every_alpha: float | None = None
        self.every_start: float | None = None
        axis = override.get("axis_slider")
        if axis:
            self.alphas[axis] = override.get("axis_alpha", self.alphas.get(axis, default_alpha))
            if "axis_start" in override:
                self.starts[axis] = override["axis_start"]
        else:
            self.every_alpha = override.get("axis_alpha")
            self.every_start = override.get("axis_start")

    def lookup(self, table: dict[str, float], every: float | None, name: str, same: SameSlider) -> float | None:
        for key, value in table.items():
            if same(key, name):
                return value
        return every

    def alpha_for(self, name: str, same: SameSlider) -> float | None:
        return self.lookup(self.alphas, self.every_alpha, name, same)

    def start_for(self, name: str, same: SameSlider) -> float | None:
        return self.lookup(self.starts, self.every_start, name, same)


def rewrite_prompt(prompt: str, targets: _Targets, same: SameSlider, used: set[str]) -> str:
    def rewrite(match):
        if match.group(1) != NETWORK_NAME:
            return match.group(0)
        try:
            tag = parse_slider_args(match.group(2).split(":"), match.group(0))
        except TagError:
            return match.group(0)  # reported when the batch is planned
        alpha = targets.alpha_for(tag.name, same)
        start = targets.start_for(tag.name, same)
        if alpha is None and start is None:
            return match.group(0)
        used.update(key for key in (*targets.alphas, *targets.starts) if same(key, tag.name))
        return format_tag(tag.name, alpha if alpha is not None else tag.alpha,
                          start if start is not None else tag.start, tag.stop, tag.te, tag.unet)

    return RE_EXTRA_NET.sub(rewrite, prompt)


def apply_overrides(p, requests: Sequence[SliderRequest], same: SameSlider = _exact,
                    default_alpha: float = 1.0) -> list[SliderRequest]:
    """Rewrite ``p``'s prompts for the cell's overrides and return the requests to use."""
    override = getattr(p, "sliders_override", None)
    if not override:
        return list(requests)
    targets = _Targets(override, default_alpha)
    used: set[str] = set()
    for attribute in ("all_prompts", "all_hr_prompts"):
        prompts = getattr(p, attribute, None)
        if prompts:
            setattr(p, attribute, [rewrite_prompt(prompt, targets, same, used) for prompt in prompts])
    changed = []
    for request in requests:
        alpha = targets.alpha_for(request.name, same)
        start = targets.start_for(request.name, same)
        used.update(key for key in (*targets.alphas, *targets.starts) if same(key, request.name))
        changed.append(replace(request, alpha=request.alpha if alpha is None else AlphaSpec("value", (float(alpha),)),
                               start=request.start if start is None else start))
    for name in [*targets.alphas, *targets.starts]:
        if name in used or any(r.name == name for r in changed):
            continue
        alpha = targets.alphas.get(name, default_alpha)
        changed.append(SliderRequest(name, AlphaSpec("value", (float(alpha),)), targets.starts.get(name),
                                     source=f"X/Y/Z plot ({name})"))
        used.add(name)
    return changed
