"""What each image of a job got, for its ``Sliders`` / ``Slider hashes`` infotext, and the problems under it.

The infotext lists only sliders that were applied to the image: each image's record is written when its batch is
applied and loses a slider that fails later (inside the model while sampling). A slider that fails is reported
(console and the comments under the image) and left out of the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..apply.job_plan import BatchPlan
from ..errors import SliderError, SliderFileError
from ..library.slider_library import SliderLibrary
from ..prompt.infotext import HASHES_KEY, SLIDERS_KEY, format_hashes, format_sliders

logger = logging.getLogger("concept_sliders")


@dataclass
class ImageRecord:
    """What one image of the job got, for its infotext.

    A slider counts as in the image when some pass (first pass, hires pass) applied it with α ≠ 0 and it didn't
    fail in that pass; one that failed and was never in the image is left out of both fields (a request at α 0
    that never failed stays in ``Sliders``).
    """

    entries: list[tuple[str, float, float]] = field(default_factory=list)  # "Sliders": the requests' entries…
    entry_sliders: list[str] = field(default_factory=list)  # …and the slider each entry became
    hashes: dict[str, str] = field(default_factory=dict)  # slider → short hash
    applied: dict[str, int] = field(default_factory=dict)  # slider → passes that applied it with α ≠ 0
    failed: set[str] = field(default_factory=set)  # sliders that failed in some pass

    def has(self, name: str) -> bool:
        return self.applied.get(name, 0) > 0

    def sliders_value(self) -> str | None:
        entries = [e for e, name in zip(self.entries, self.entry_sliders, strict=True)
                   if self.has(name) or name not in self.failed]
        return format_sliders(entries) if entries else None

    def hashes_value(self) -> str | None:
        hashes = {name: h for name, h in self.hashes.items() if self.has(name)}
        return format_hashes(hashes) if hashes else None


def add_infotext_fields(p, job_of: Callable[[object], object | None]) -> None:
    """Put the ``Sliders`` / ``Slider hashes`` fields in ``p``'s infotext, read from the image records of
    ``job_of(p)`` (its ``images``) when an infotext is made."""

    def sliders_field(p=None, index=0, all_prompts=None, use_main_prompt=False, **kwargs):
        record = _record(job_of(p), p, index, all_prompts, use_main_prompt)
        return record.sliders_value() if record else None

    def hashes_field(p=None, index=0, all_prompts=None, use_main_prompt=False, **kwargs):
        record = _record(job_of(p), p, index, all_prompts, use_main_prompt)
        return record.hashes_value() if record else None

    # Callables (not strings) because each image of the job can have its own sliders.
    p.extra_generation_params[SLIDERS_KEY] = sliders_field
    p.extra_generation_params[HASHES_KEY] = hashes_field


def record_pass(images: dict[int, ImageRecord], plan: BatchPlan, failed: set[str],
                hashes: Callable[[list[str]], dict[str, str]] | None) -> None:
    """What each image of ``plan`` got in this pass (``plan.sliders``: the applied ones). ``hashes``: short hashes
    by slider name, None when the infotext leaves them out."""
    for image, index in enumerate(plan.job_indices):
        record = images.setdefault(index, ImageRecord())
        if not record.entries:  # the requests are the job's: the hires pass has the same
            record.entries = list(plan.requested[image])
            record.entry_sliders = list(plan.requested_sliders[image])
        record.failed.update(failed)
        used = [s.name for s in plan.sliders if s.image_alphas[image]]
        for name in used:
            record.applied[name] = record.applied.get(name, 0) + 1
        if hashes is not None:
            record.hashes.update(hashes([name for name in used if name not in record.hashes]))


def take_back(images: dict[int, ImageRecord], job_indices: Iterable[int], names: Sequence[str]) -> None:
    """``names`` failed inside the model during a pass: that pass gave the images of ``job_indices`` nothing."""
    for index in job_indices:
        record = images.setdefault(index, ImageRecord())
        record.failed.update(names)
        for name in names:
            if record.applied.get(name, 0) > 0:
                record.applied[name] -= 1


def short_hashes(library: SliderLibrary, names: Sequence[str]) -> dict[str, str]:
    hashes = {}
    for name in names:
        try:
            hashes[name] = library.short_hash(name)
        except (SliderError, SliderFileError, OSError):
            continue  # hashes only advise; the slider itself was reported if it failed
    return hashes


def report_problem(p, reported: set[str] | None, message: str, error: BaseException | None = None) -> None:
    """A problem the user must see: console (with ``error``'s traceback) and the comments under the image; once
    per job when ``reported`` (the job's messages so far) is given."""
    if reported is not None:
        if message in reported:
            return
        reported.add(message)
    logger.warning("Concept Sliders: %s", message,
                   exc_info=(type(error), error, error.__traceback__) if error is not None else None)
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(f"Concept Sliders: {message}")


def _job_index(p, index: int, all_prompts, use_main_prompt: bool = False) -> int:
    """The job-wide index of the image an infotext is made for.

    ``create_infotext`` gets the job's prompts and a job index when called for a finished job (grids, the
    API's ``infotexts``), but only the batch's prompts and an index within the batch while images are saved.
    A grid's infotext describes the job's first image.
    """
    if use_main_prompt:
        return 0
    if all_prompts is not None and all_prompts is not getattr(p, "all_prompts", None):
        return int(getattr(p, "iteration", 0) or 0) * int(getattr(p, "batch_size", 1) or 1) + int(index or 0)
    return int(index or 0)


def _record(job, p, index: int, all_prompts, use_main_prompt: bool) -> ImageRecord | None:
    return job.images.get(_job_index(p, index, all_prompts, use_main_prompt)) if job is not None else None
