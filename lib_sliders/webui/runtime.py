"""One generation job's sliders on the live model: plan per batch, apply, per-row α per step, clean up.

The webui drives it in this order (``modules/processing.py``; the entry script wires the calls):

1. ``start_job`` (``Script.process``): the job's requests (UI rows, API args, X/Y/Z), infotext fields;
2. per batch: ``plan_batch`` (``Script.before_process_batch``, raw prompts with their tags) →
   ``activate`` (the ``slider`` extra network's ``activate``, also again for the hires pass);
3. per sampling step: ``on_cfg_denoiser`` sets each UNet row's α (rows = cond rows of every image, then
   uncond rows) and the step for start/stop gates;
4. ``finish`` (``Script.postprocess``; ``Script.before_process`` of the next job as a backstop).

Each image's ``Sliders`` / ``Slider hashes`` infotext lists only the sliders applied to it (``infotext_records``).
The engine follows ``shared.sd_model``'s UNet, also when the webui switches models without telling
(``model_following``).

Nothing here imports the webui: the model, options and the ``AND``-prompt counter come in through
``Host``, so the logic runs the same against the real webui and its test double.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..apply.cfg_rows import job_image_indices
from ..apply.engine import ActiveSlider, SliderEngine
from ..apply.job_plan import BatchPlan, ResolvedSlider, SliderRequest, plan_batch
from ..errors import SliderError
from ..files.metadata import slider_info
from ..files.slider_file import check_compatible
from ..library.slider_library import SliderLibrary
from .infotext_records import ImageRecord, add_infotext_fields, record_pass, report_problem, short_hashes, take_back
from .model_following import ModelFollowing
from .models import model_arch
from .row_layout import cond_rows, plan_row_alphas, row_images, subprompt_counts
from .user_metadata import merged_info, read_user_metadata

logger = logging.getLogger("concept_sliders")


@dataclass
class Host:
    """What the runtime needs from the webui, as plain callables."""

    sd_model: Callable[[], object]  # shared.sd_model
    library: Callable[[], SliderLibrary]
    apply_mode: Callable[[], str] = lambda: "hooks"  # "hooks" | "auto" (setting)
    add_hashes: Callable[[], bool] = lambda: True  # setting
    count_subprompts: Callable[[Sequence[str]], list[int]] | None = None  # AND sub-prompts per prompt
    lora_may_write_weights: Callable[[object], bool] = lambda p: True  # False only when merging is safe


@dataclass
class JobState:
    """What the runtime keeps on ``p`` (``p.sliders_job``) for one job."""

    requests: list[SliderRequest]
    images: dict[int, ImageRecord] = field(default_factory=dict)  # job image index → what it got
    failed: dict[str, str] = field(default_factory=dict)  # slider → error: off for the rest of the job
    reported: set[str] = field(default_factory=set)
    rows_warned: bool = False
    plan: BatchPlan | None = None
    tags_only: bool = False  # started without our script: planned from the prompts at activation
    planned_batch: int | None = None


class SlidersRuntime(ModelFollowing):
    def __init__(self, host: Host):
        self.host = host
        self._engine: SliderEngine | None = None
        self._engine_model = None
        self._applied: BatchPlan | None = None
        self._applied_p = None  # the processing object the applied plan belongs to
        self._applied_key: tuple | None = None
        self._layout: tuple | None = None
        self._layout_warned = False
        self._text_signature: tuple = ()  # text-encoder sliders the webui's cached conds were made with

    # ------------------------------------------------------------------ job

    def start_job(self, p, requests: Sequence[SliderRequest]) -> None:
        self.clear()
        job = JobState(list(requests))
        p.sliders_job = job
        add_infotext_fields(p, _job)

    def plan_batch(self, p, prompts: Sequence[str], batch_number: int) -> BatchPlan:
        """The batch's sliders (``Script.before_process_batch``). The infotext is written when they're applied."""
        job = _job(p)
        if job is None:  # our process() didn't run for this job: tags only
            job = p.sliders_job = JobState([])
        self.follow_model()
        plan = self._plan(p, job, prompts, batch_number)
        job.plan = plan
        return plan

    def _plan(self, p, job: JobState, prompts: Sequence[str], batch_number: int) -> BatchPlan:
        job_size = max(len(getattr(p, "all_prompts", None) or prompts), len(prompts))
        indices = job_image_indices(batch_number, len(prompts))
        plan = plan_batch(prompts, indices, job_size, job.requests, self._resolver(),
                          int(getattr(p, "steps", 0) or 0))
        for message in plan.problems:
            self.report(p, message)
        return plan

    def _hires_plan(self, p, job: JobState) -> BatchPlan | None:
        """The hires pass's own plan when it has its own prompts (a "Hires prompt" with other tags)."""
        prompts = getattr(p, "all_hr_prompts", None)
        size = int(getattr(p, "batch_size", 0) or 0)
        first = int(getattr(p, "iteration", 0) or 0) * size
        if not prompts or size < 1 or len(prompts) < first + size:
            return None
        return self._plan(p, job, prompts[first:first + size], first // size)

    def activate(self, p) -> None:
        """Apply the current batch's plan to the loaded model (or take everything off when it's empty)."""
        job = _job(p)
        if job is None or job.tags_only:
            job = self._plan_without_script(p, job)
        plan = job.plan if job else None
        if plan is not None and getattr(p, "is_hr_pass", False):
            plan = self._hires_plan(p, job) or plan
        self._apply_plan(p, plan)

    def _plan_without_script(self, p, job: JobState | None) -> JobState:
        """A job sampled without our script's hooks (``p.scripts`` None, e.g. the training preview): plan the
        batch from its prompts' tags when it is activated."""
        iteration = int(getattr(p, "iteration", 0) or 0)
        if job is not None and job.planned_batch == iteration:
            return job
        if job is None:
            job = p.sliders_job = JobState([], tags_only=True)
        size = int(getattr(p, "batch_size", 1) or 1)
        prompts = (getattr(p, "all_prompts", None) or [])[iteration * size:(iteration + 1) * size]
        job.plan = self._plan(p, job, prompts, iteration) if prompts else None
        job.planned_batch = iteration
        return job

    def _apply_plan(self, p, plan: BatchPlan | None, record: bool = True) -> None:
        """Apply ``plan`` to ``shared.sd_model``. ``record``: a pass of its images (False: the same pass moved to
        another model, whose outcome doesn't change what the images got)."""
        if not plan:
            self._check_cond_cache(p, [])
            self.clear()
            if plan is not None and record:
                self._record(p, plan, set())  # requests at α 0 still go into the infotext
            return
        job = _job(p)
        model = self.host.sd_model()
        engine = self._engine_for(model)
        sliders = []
        kept = []
        failed = set()
        for planned in plan.sliders:
            if job is not None and planned.name in job.failed:
                failed.add(planned.name)  # failed earlier in this job (reported then)
                continue
            try:
                engine.validate(planned.network)
            except SliderError as err:
                self.report(p, f"<slider:{planned.name}>: {err}")
                failed.add(planned.name)
                continue
            except Exception as err:  # a bug must not leave the last batch's sliders on: this one goes without
                self._slider_failed(p, planned.name, err, "couldn't be applied")
                failed.add(planned.name)
                continue
            kept.append(planned)
            sliders.append(ActiveSlider(planned.network, alpha=planned.image_alphas[0], start=planned.start,
                                        stop=planned.stop, unet_multiplier=planned.unet,
                                        text_multiplier=self._text_multiplier(p, planned)))
        if not sliders:
            plan.sliders = kept
            self._check_cond_cache(p, [])
            if record:
                self._record(p, plan, failed)
            self.clear()
            return
        mode = "auto" if self.host.apply_mode() == "auto" and not self.host.lora_may_write_weights(p) else "hooks"
        if mode != "hooks" and not engine.can_merge([s.network for s in sliders]):
            mode = "hooks"  # weights stored in fp8 (FP8 weight setting): the engine said why, once
        sliders, patched = self._take_out_patched(p, sliders, kept)
        key = (mode, tuple(s.key for s in kept), patched)
        reused = False
        if key == self._applied_key and engine.sliders:
            try:
                engine.set_alphas([s.alpha for s in sliders])  # batches that differ only in α land here
                reused = True
            except Exception:
                engine.clear()  # applied anew below, one by one if need be
        if not reused:
            self._applied_key = None
            sliders, applied = self._engine_apply(p, engine, sliders, kept, mode)
            applied_ids = {id(column) for column in applied}
            failed.update(column.name for column in kept if id(column) not in applied_ids)
            kept = applied
            self._applied_key = (mode, tuple(s.key for s in kept), patched) if kept else None
        failed.update(engine.failed)
        plan.sliders = kept
        self._check_cond_cache(p, sliders)
        if record:
            self._record(p, plan, failed)
        if not kept:
            self.clear()
            return
        self._applied = plan
        self._applied_p = p
        self._layout = None

    def _take_out_patched(self, p, sliders: list[ActiveSlider], planned: list) -> tuple[list[ActiveSlider], tuple]:
        """A host that patches some sliders' UNet part its own way (Forge) takes those parts out of ``sliders``
        here; it returns what the engine applies (one per planned slider, same order) and which were taken out."""
        return sliders, ()

    def before_every_sampling(self, p) -> None:
        """Right before each sampling (the webui's ``process_before_every_sampling``): nothing on A1111, where
        sliders are on the model from ``activate``."""

    def _engine_apply(self, p, engine: SliderEngine, sliders: list[ActiveSlider], planned: list,
                      mode: str) -> tuple[list[ActiveSlider], list]:
        """Apply ``sliders``; when that raises, find the ones that fail, report them and apply the others.

        Returns the applied sliders and their planned sliders.
        """
        try:
            engine.apply(sliders, mode=mode)
            return sliders, planned
        except Exception as err:  # an engine error must not cost the image: it is made without the culprit
            error = err
        engine.clear()
        good, good_planned = [], []
        for slider, column in zip(sliders, planned, strict=True):
            try:
                engine.apply([slider], mode=mode)
            except Exception as err:
                self._slider_failed(p, column.name, err, "couldn't be applied")
            else:
                good.append(slider)
                good_planned.append(column)
            finally:
                engine.clear()
        if len(good) == len(sliders):
            good, good_planned = [], []  # they only fail together: all of them are off
            for column in planned:
                self._slider_failed(p, column.name, error, "couldn't be applied")
        if good:
            try:
                engine.apply(good, mode=mode)
            except Exception as err:
                engine.clear()
                for column in good_planned:
                    self._slider_failed(p, column.name, err, "couldn't be applied")
                return [], []
        return good, good_planned

    def _slider_failed(self, p, name: str, err: BaseException, what: str) -> None:
        """``name`` raised an error: off for the rest of the job, reported once (with the traceback on the console)."""
        job = _job(p)
        if job is not None:
            job.failed.setdefault(name, str(err))
        self.report(p, f"<slider:{name}>: {what} ({type(err).__name__}: {err}); the image is made without it",
                    error=err)

    def _record(self, p, plan: BatchPlan, failed: set[str]) -> None:
        """What each image of ``plan`` got in this pass (``plan.sliders``: the applied ones), for its infotext."""
        job = _job(p)
        if job is None:
            return
        hashes = (lambda names: short_hashes(self.host.library(), names)) if self.host.add_hashes() else None
        record_pass(job.images, plan, failed, hashes)

    def _late_failure(self, names: list[str], err: BaseException) -> None:
        """The engine turned sliders off because they raised inside the model while sampling."""
        p, plan = self._applied_p, self._applied
        job = _job(p)
        for name in names:
            self._slider_failed(p, name, err, "failed inside the model")
        if job is not None and plan is not None:
            take_back(job.images, plan.job_indices, names)

    def _rows_mismatch(self, batch: int, first_row: int, rows: int) -> None:
        """A UNet call that isn't one of the denoiser's (another extension's extra pass): it got one α per slider."""
        job = _job(self._applied_p)
        holder = job if job is not None else self  # once per job (per runtime without one)
        if getattr(holder, "rows_warned", False):
            return
        holder.rows_warned = True
        logger.warning("Concept Sliders: the UNet was called with %d rows at row %d of the %d the sampler's batch has "
                       "(another extension's extra pass?); such calls get the first image's α for all their rows",
                       batch, first_row, rows)

    def _text_multiplier(self, p, planned) -> float:
        # A batch's prompts go through the text encoder together (and its negative prompts share one
        # conditioning), so a text-encoder delta can't differ between its images: only the UNet part varies.
        if planned.network.has_text and not planned.is_uniform:
            self.report(p, f"<slider:{planned.name}>: its text-encoder part can't vary between the images of a "
                           "batch; only its UNet part does here")
            return 0.0
        return planned.te

    def _check_cond_cache(self, p, sliders) -> None:
        """Drop the webui's cached conditionings when the text-encoder sliders changed since they were made.

        The webui keys its cache on the prompts and the first prompt's extra-network tags, so a text-encoder
        slider from the accordion or the API (not a tag) would otherwise get the conds of the last job.
        """
        signature = tuple((s.network.name, s.text_alpha()) for s in sliders
                          if s.network.has_text and s.text_alpha() != 0)
        if signature == self._text_signature:
            return
        self._text_signature = signature
        for attribute in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
            cache = getattr(p, attribute, None)
            if isinstance(cache, list) and cache:
                cache[0] = None

    def on_cfg_denoiser(self, params) -> None:
        """Before each sampling step's UNet calls: per-row α for this batch layout, and the step gates."""
        engine, plan = self._engine, self._applied
        if engine is None or plan is None or not engine.sliders:
            return
        p = getattr(getattr(params, "denoiser", None), "p", None)
        if p is not None and p is not self._applied_p:
            # Someone samples with another job while ours is applied (a job that failed before our
            # postprocess, then an extension's own sampling): it must not get our sliders.
            self.clear()
            return
        if not self._on_current_model():  # e.g. the refiner, switched to without on_model_loaded
            self.follow_model()
            engine, plan = self._engine, self._applied
            if engine is None or plan is None or not engine.sliders:
                return
        self._set_row_alphas(params, p, plan, engine)
        # The denoiser counts its own calls; the webui's state.sampling_step only moves after each step.
        denoiser = getattr(params, "denoiser", None)
        step, total = getattr(denoiser, "step", None), getattr(denoiser, "total_steps", None)
        if step is None or not total:
            step, total = params.sampling_step, params.total_sampling_steps
        engine.set_step(int(step), int(total))

    def _set_row_alphas(self, params, p, plan: BatchPlan, engine: SliderEngine) -> None:
        """Each UNet row's α for the denoiser's batch (``params.x``: cond rows of every image, then uncond rows)."""
        rows = int(params.x.shape[0])
        cond_row_count = cond_rows(params.text_cond)
        layout = (rows, cond_row_count, bool(getattr(p, "is_hr_pass", False)))
        if layout != self._layout:
            self._layout = layout
            images = len(plan.sliders[0].image_alphas)
            engine.set_alphas(plan_row_alphas(plan, self._row_images(p, images, rows, cond_row_count)))

    def finish(self, p=None) -> None:
        self.clear()

    def clear(self) -> None:
        """Take every slider off the model; the engine (and its references to the model) goes too."""
        if self._engine is not None:
            self._engine.clear()
        self._engine = None
        self._engine_model = None
        self._applied = None
        self._applied_p = None
        self._applied_key = None
        self._layout = None

    @property
    def active(self) -> bool:
        return self._engine is not None and bool(self._engine.sliders)

    # ------------------------------------------------------------------ helpers

    def report(self, p, message: str, error: BaseException | None = None) -> None:
        """A problem the user must see: console (with ``error``'s traceback) and the comments under the image,
        once per job."""
        job = _job(p)
        report_problem(p, job.reported if job is not None else None, message, error)

    def _resolver(self) -> Callable[[str], ResolvedSlider]:
        library = self.host.library()
        model = self.host.sd_model()
        arch = model_arch(model) if model is not None else None

        def resolve(name: str) -> ResolvedSlider:
            if model is None:
                raise SliderError("no model is loaded")
            if arch is None:
                raise SliderError("the loaded model is not SD 1.x, SD 2.x or SDXL")
            network = library.load(name)
            check_compatible(network, arch)
            start = slider_info(network.metadata).default_start
            entry = library.get(name)
            if entry is not None:  # the user's default start (card editor, NAME.json) wins over the file's
                start = merged_info({"default_start": start}, read_user_metadata(entry.path))["default_start"]
            return ResolvedSlider(network, start)

        return resolve

    def _row_images(self, p, images: int, rows: int, cond_row_count: int) -> list[int] | None:
        """Image of each UNet row, or None when the layout can't be read (then every row gets image 0's α)."""
        subprompts = None if cond_row_count == images else subprompt_counts(self.host.count_subprompts, p, images)
        found = row_images(images, rows, cond_row_count, subprompts)
        if found is None and not self._layout_warned:
            self._layout_warned = True
            logger.warning("Concept Sliders: can't tell which image each of %d UNet rows belongs to; "
                           "every image gets the first image's α", rows)
        return found


def _job(p) -> JobState | None:
    return getattr(p, "sliders_job", None) if p is not None else None
