"""Which sliders a batch of images gets, and at what α for each image.

A generation job is ``n_iter`` batches of ``batch_size`` images. Sliders reach it from two places:

* ``<slider:…>`` tags in each image's own prompt (every prompt is read, not only the first one);
* requests that apply to every image of the job: the UI's slider rows, API arguments, X/Y/Z axes.

``plan_batch`` turns both into one ``PlannedSlider`` per distinct (name, start, stop, te, unet): a column of
per-image α, 0 for images that don't use it. Two tags for the same slider with the same window add up, as
two LoRAs with the same file would. A request that can't be used (bad tag, unknown name, a file for
another model) becomes a problem message naming the tag or row; the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import SliderError
from ..files.lora import SliderNetwork
from ..prompt.prompt_tags import AlphaSpec, SliderTag, TagError, find_slider_tags, resolve_fraction

DEFAULT_ALPHA = 1.0


@dataclass(frozen=True)
class SliderRequest:
    """A slider asked for by every image of the job. ``source`` names it in messages ("Sliders row 2")."""

    name: str
    alpha: AlphaSpec
    start: float | None = None  # None: the file's recommended start
    stop: float | None = None
    te: float | None = None
    unet: float | None = None
    source: str = ""

    def as_tag(self) -> SliderTag:
        return SliderTag(self.name, self.alpha, self.start, self.stop, self.te, self.unet, self.source or self.name)


@dataclass
class PlannedSlider:
    name: str
    network: SliderNetwork
    image_alphas: list[float]  # one per image of the batch
    start: float  # fractions of the sampling steps
    stop: float
    te: float
    unet: float
    from_prompt: bool  # at least one image got it from a tag in its prompt

    @property
    def key(self) -> tuple:
        return (self.name, self.start, self.stop, self.te, self.unet)

    @property
    def is_uniform(self) -> bool:
        return all(a == self.image_alphas[0] for a in self.image_alphas)


@dataclass
class BatchPlan:
    sliders: list[PlannedSlider] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Requests (not prompt tags) per image: (name, α, start) for the infotext's "Sliders" field…
    requested: list[list[tuple[str, float, float]]] = field(default_factory=list)
    # …and the slider (``PlannedSlider.name``) each of those entries became.
    requested_sliders: list[list[str]] = field(default_factory=list)
    job_indices: list[int] = field(default_factory=list)  # the job index of each image of the batch

    def __bool__(self) -> bool:
        return bool(self.sliders)


@dataclass(frozen=True)
class ResolvedSlider:
    """What the resolver returns for a name: the network and the file's recommended start."""

    network: SliderNetwork
    default_start: float = 0.0


Resolver = Callable[[str], ResolvedSlider]  # raises SliderError (unknown name, bad file, wrong model)


def plan_batch(
    prompts: Sequence[str],
    job_indices: Sequence[int],
    job_size: int,
    requests: Sequence[SliderRequest],
    resolve: Resolver,
    total_steps: int,
) -> BatchPlan:
    """The sliders of one batch. ``prompts[i]`` is the raw prompt (tags included) of job image ``job_indices[i]``."""
    if len(prompts) != len(job_indices):
        raise ValueError(f"{len(prompts)} prompts for {len(job_indices)} images")
    plan = BatchPlan(requested=[[] for _ in prompts], requested_sliders=[[] for _ in prompts],
                     job_indices=list(job_indices))
    columns: dict[tuple, PlannedSlider] = {}
    resolved: dict[str, ResolvedSlider | None] = {}
    reported: set[str] = set()

    def report(message: str) -> None:
        if message not in reported:  # the same bad tag in every prompt of a batch is one problem
            reported.add(message)
            plan.problems.append(message)

    def lookup(tag: SliderTag) -> ResolvedSlider | None:
        if tag.name not in resolved:
            try:
                resolved[tag.name] = resolve(tag.name)
            except SliderError as err:
                resolved[tag.name] = None
                report(f"{tag.text}: {err}")
        return resolved[tag.name]

    def add(tag: SliderTag, image: int, from_prompt: bool) -> tuple[str, float, float] | None:
        found = lookup(tag)
        if found is None:
            return None
        try:
            start, stop = _window(tag, found.default_start, total_steps)
        except TagError as err:
            report(str(err))
            return None
        alpha = tag.alpha_for_image(job_indices[image], job_size, DEFAULT_ALPHA)
        te = 1.0 if tag.te is None else tag.te
        unet = 1.0 if tag.unet is None else tag.unet
        key = (found.network.name, start, stop, te, unet)
        column = columns.get(key)
        if column is None:
            column = columns[key] = PlannedSlider(found.network.name, found.network, [0.0] * len(prompts),
                                                  start, stop, te, unet, from_prompt)
            plan.sliders.append(column)
        column.image_alphas[image] += alpha
        column.from_prompt = column.from_prompt or from_prompt
        return column.name, alpha, start

    for image, prompt in enumerate(prompts):
        for tag in find_slider_tags(prompt):
            if isinstance(tag, TagError):
                report(str(tag))
            else:
                add(tag, image, from_prompt=True)
        for request in requests:
            used = add(request.as_tag(), image, from_prompt=False)
            if used is not None:
                slider, alpha, start = used
                plan.requested[image].append((request.name, alpha, start))
                plan.requested_sliders[image].append(slider)
    plan.sliders = [s for s in plan.sliders if any(s.image_alphas)]
    return plan


def varies_across_images(requests: Sequence[SliderRequest], prompts: Sequence[str]) -> bool:
    """Whether a job is a strip: some slider's α changes from image to image (a spread or a cycle of two or more
    values, in a request or in a tag). Different fixed tags in different prompts aren't a strip."""
    specs = [request.alpha for request in requests]
    specs += [tag.alpha for prompt in prompts for tag in find_slider_tags(prompt) if isinstance(tag, SliderTag)]
    return any(getattr(spec, "kind", "value") != "value" and len(set(spec.values)) > 1 for spec in specs)


def _window(tag: SliderTag, default_start: float, total_steps: int) -> tuple[float, float]:
    if tag.start is not None or tag.stop is not None:
        return tag.window(total_steps)
    start = resolve_fraction(default_start, total_steps) if default_start else 0.0
    return (start, 1.0) if start < 1.0 else (0.0, 1.0)
