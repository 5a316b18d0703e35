"""Training jobs started from the Train tab or the HTTP API: validation, state, progress, cancel, resume.

A job is submitted with a training config (``lib_sliders.training.config``) and options, validated at once
(every problem names its field), then run either in the caller's thread (the tab, inside the webui's GPU
queue) or in a background thread that takes the same queue lock (the API). Nothing here imports the webui:
``TrainingHost`` brings the model, the lock, progress reporting and the preview generator.

Files: the slider goes to ``<sliders dir>/<name>.safetensors`` (atomic; an existing file is only replaced with
``overwrite``); the resumable state of an unfinished run to ``<sliders dir>/.training/<name>.state``
(hidden folders are not scanned for sliders). Cancelling saves what was learned so far as the slider and
keeps the state for "resume"; a finished run removes its state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from ..errors import SliderError
from ..files.lora import SliderNetwork
from ..training.config import TrainConfig
from ..training.config_values import ConfigError
from ..training.trained_slider import TrainResult, save_trained_slider
from ..training.trainer import SliderTrainer, TrainProgress

logger = logging.getLogger("concept_sliders")

STATES = ("queued", "running", "done", "cancelled", "failed")
STATE_FOLDER = ".training"


@dataclass
class TrainOptions:
    overwrite: bool = False  # replace an existing slider file of that name
    resume: bool = False  # continue from the state a cancelled run of the same settings left
    preview: bool = True  # generate and save a preview strip when done


@dataclass
class TrainingHost:
    """What a training job needs from the webui."""

    sliders_dir: Callable[[], str]
    prepare: Callable[[], Any]  # checks and readies the model; returns a DiffusionBackend or raises SliderError
    restore: Callable[[], None]  # undoes ``prepare`` (always called)
    base_model: Callable[[], tuple[str | None, str | None]] = lambda: (None, None)  # (name, hash)
    prediction_type: Callable[[], str | None] = lambda: None
    lock: Any = field(default_factory=threading.Lock)  # the webui's GPU queue lock
    on_progress: Callable[[TrainJob], None] = lambda job: None  # e.g. the webui's progress bar
    interrupted: Callable[[], bool] = lambda: False  # e.g. shared.state.interrupted
    make_preview: Callable[[TrainJob], str | None] | None = None  # returns the preview image path
    on_saved: Callable[[TrainJob], None] = lambda job: None  # e.g. refresh the slider list
    # Around a background job (the API's): the webui's job state, so a stale Interrupt can't cancel it.
    job_context: Callable[[TrainJob], Any] = lambda job: contextlib.nullcontext()
    # The slider list, for ``train_among``: its names, and a name → the loaded slider (raises SliderError).
    slider_names: Callable[[], Collection[str]] = lambda: ()
    load_slider: Callable[[str], SliderNetwork] | None = None
    # Why this webui can't train at all (e.g. on Forge, until its backend is done), in one line; None: it can.
    unavailable: Callable[[], str | None] = lambda: None


@dataclass
class TrainJob:
    id: str
    config: TrainConfig
    options: TrainOptions
    state: str = "queued"
    iteration: int = 0
    total: int = 0
    loss: float | None = None
    its_per_second: float | None = None
    eta_seconds: float | None = None
    effect: dict | None = None
    does_nothing: bool | None = None
    output: str | None = None
    preview: str | None = None
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.config.name, "mode": self.config.mode, "state": self.state,
            "iteration": self.iteration, "total": self.total, "loss": self.loss,
            "its_per_second": self.its_per_second, "eta_seconds": self.eta_seconds, "effect": self.effect,
            "does_nothing": self.does_nothing, "output": self.output, "preview": self.preview,
            "error": self.error, "messages": list(self.messages), "created": self.created,
            "finished": self.finished,
        }

    @property
    def progress(self) -> float:
        return self.iteration / self.total if self.total else 0.0


WEBUI_RESOLUTION_STEP = 64


class SubmitError(SliderError):
    """A job that can't start; ``errors`` are (field, problem) pairs for a 422 answer."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{f}: {p}" for f, p in errors))


class TrainingJobs:
    def __init__(self, host: TrainingHost):
        self.host = host
        self._jobs: dict[str, TrainJob] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ paths

    def output_path(self, name: str) -> str:
        return os.path.join(self.host.sliders_dir(), f"{name}.safetensors")

    def state_path(self, name: str) -> str:
        return os.path.join(self.host.sliders_dir(), STATE_FOLDER, f"{name}.state")

    # ------------------------------------------------------------------ submit and query

    def create(self, config: TrainConfig | dict, options: TrainOptions | None = None) -> TrainJob:
        """A validated, queued job; ``SubmitError`` lists every problem by field (or only ``webui``: the webui
        can't train)."""
        options = options or TrainOptions()
        reason = self.host.unavailable()
        if reason:
            raise SubmitError([("webui", reason)])
        if not isinstance(config, TrainConfig):
            try:
                config = TrainConfig.from_dict(config)
            except ConfigError as err:
                raise SubmitError([(err.field, err.problem)]) from None
        errors = [(e.field, e.problem) for e in config.validation_errors()]
        if not errors and config.resolution % WEBUI_RESOLUTION_STEP:
            # Every model the webui trains on (SD 1.x/2.x/SDXL) has an 8× VAE and a UNet that halves 3 times.
            errors.append(("resolution", f"must be a multiple of {WEBUI_RESOLUTION_STEP} for SD 1.x, 2.x and SDXL"))
        if not errors:
            if os.path.exists(self.output_path(config.name)) and not options.overwrite and not options.resume:
                errors.append(("name", f"a slider named {config.name!r} exists; choose another name or overwrite it"))
            if options.resume and not os.path.exists(self.state_path(config.name)):
                errors.append(("resume", f"no unfinished run of {config.name!r} to resume"))
            errors += self._among_errors(config)
            with self._lock:
                if any(j.config.name == config.name and j.state in ("queued", "running") for j in self._jobs.values()):
                    errors.append(("name", f"a job training {config.name!r} is already queued or running"))
        if errors:
            raise SubmitError(errors)
        job = TrainJob(uuid.uuid4().hex[:12], config, options, total=config.iterations)
        with self._lock:
            self._jobs[job.id] = job
        return job

    def _among_errors(self, config: TrainConfig) -> list[tuple[str, str]]:
        if not config.train_among:
            return []
        if self.host.load_slider is None:
            return [("train_among", "this host can't load sliders to train among")]
        known = set(self.host.slider_names())
        return [(f"train_among[{i}]", f"no slider named {name!r} in the slider list (refresh it, or check the name)")
                for i, name in enumerate(config.train_among) if name not in known]

    def get(self, job_id: str) -> TrainJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[TrainJob]:
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> TrainJob | None:
        job = self.get(job_id)
        if job is not None and job.state in ("queued", "running"):
            job.cancel_requested = True
        return job

    # ------------------------------------------------------------------ running

    def start_in_background(self, job: TrainJob) -> threading.Thread:
        def work():
            with self.host.lock, self.host.job_context(job):
                self.run(job)

        thread = threading.Thread(target=work, name=f"sliders-train-{job.id}", daemon=True)
        thread.start()
        return thread

    def run(self, job: TrainJob) -> TrainJob:
        """Run ``job`` in this thread; the caller holds the webui's queue lock. Never raises."""
        if job.cancel_requested:
            self._finish(job, "cancelled")
            return job
        job.state = "running"
        try:
            try:
                result = self._train(job, self.host.prepare())
            finally:
                self.host.restore()  # also after a failed prepare: it undoes only what prepare did
            self._save(job, result)
            if self.host.make_preview is not None and job.options.preview and result.iterations > 0:
                try:
                    job.preview = self.host.make_preview(job)
                except Exception as err:  # a preview is a bonus; the slider is saved already
                    logger.exception("Concept Sliders: preview for %s failed", job.config.name)
                    job.messages.append(f"preview failed: {err}")
            self._finish(job, "cancelled" if result.cancelled else "done")
        except SliderError as err:
            job.error = str(err)
            self._finish(job, "failed")
        except Exception as err:  # noqa: BLE001 — reported to the user, not raised into the webui's queue
            logger.exception("Concept Sliders: training %s failed", job.config.name)
            job.error = _explain(err)
            self._finish(job, "failed")
        return job

    def _train(self, job: TrainJob, backend) -> TrainResult:
        state = self.state_path(job.config.name)
        os.makedirs(os.path.dirname(state), exist_ok=True)

        def progress(update: TrainProgress) -> None:
            job.iteration, job.total = update.iteration, update.total
            job.loss, job.its_per_second = update.loss, update.its_per_second
            job.eta_seconds = update.eta_seconds if update.eta_seconds != float("inf") else None
            self.host.on_progress(job)

        trainer = SliderTrainer(backend, job.config, on_progress=progress, checkpoint_path=state,
                                should_stop=lambda: job.cancel_requested or self.host.interrupted(),
                                progress_every=max(1, min(10, job.config.iterations // 100 or 1)),
                                companions=self._companions(job))
        result = trainer.train(resume_from=state if job.options.resume else None)
        job.iteration = result.iterations
        if not result.cancelled:
            with contextlib.suppress(OSError):
                os.remove(state)
        return result

    def _companions(self, job: TrainJob) -> dict[str, SliderNetwork]:
        """The sliders ``train_among`` names, loaded (a file that can't be read fails the job, naming it)."""
        companions = {name: self.host.load_slider(name) for name in job.config.train_among}
        with_text = sorted(name for name, network in companions.items() if network.has_text)
        if with_text:
            job.messages.append(f"trained among {', '.join(with_text)} without their text-encoder weights "
                                "(only their UNet part acts while training)")
        return companions

    def _save(self, job: TrainJob, result: TrainResult) -> None:
        if result.iterations == 0:
            job.messages.append("cancelled before the first iteration: nothing to save")
            return
        name, model_hash = self.host.base_model()
        path = self.output_path(job.config.name)
        overwrite = job.options.overwrite or job.options.resume
        save_trained_slider(result, path, prediction_type=self.host.prediction_type(), base_model_name=name,
                            base_model_hash=model_hash, overwrite=overwrite)
        job.output = path
        if result.effect is not None:
            job.effect = result.effect.to_dict()
            job.does_nothing = bool(result.effect.does_nothing)  # the tab and API clients show the warning
        if result.start_estimate is not None:
            job.messages.append(result.start_estimate.summary() + " (saved as the slider's default start)")
        self.host.on_saved(job)

    def _finish(self, job: TrainJob, state: str) -> None:
        job.state = state
        job.finished = time.time()
        self.host.on_progress(job)


def _explain(err: Exception) -> str:
    text = f"{type(err).__name__}: {err}"
    if "out of memory" in str(err).lower():
        return text + " — lower the resolution or the batch size, or enable gradient checkpointing"
    return text
