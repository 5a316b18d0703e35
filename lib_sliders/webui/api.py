"""HTTP routes, registered in ``on_app_started``:

* ``GET /sliders/v1/sliders`` — installed sliders with what their files recommend; ``POST /sliders/v1/refresh``;
* ``POST /sliders/v1/train`` (training settings + ``overwrite``/``resume``/``preview``; 422 lists problems by
  field), ``GET /sliders/v1/train[/{id}]``, ``POST /sliders/v1/train/{id}/cancel``.
"""

from __future__ import annotations

from .train_jobs import SubmitError, TrainOptions
from .user_metadata import merged_info, read_user_metadata


def slider_list(library) -> list[dict]:
    items = []
    for name in library.names():
        entry = library.get(name)
        if entry is None:
            continue
        info = merged_info(library.info(name), read_user_metadata(entry.path))
        items.append({
            "name": name,
            "alias": info["alias"],
            "path": info["path"],
            "arch": info["arch"],
            "alpha_range": list(info["alpha_range"]),
            "default_start": info["default_start"],
            "description": info["description"],
            "metadata": entry.metadata,
        })
    return items


def register_routes(app, library) -> None:
    """``library`` is a callable returning the current ``SliderLibrary``."""

    @app.get("/sliders/v1/sliders")
    def get_sliders():
        return slider_list(library())

    @app.post("/sliders/v1/refresh")
    def refresh_sliders():
        library().refresh()
        return {"count": len(library().names())}


TRAIN_OPTION_FIELDS = ("overwrite", "resume", "preview")


def split_train_request(body) -> tuple[dict, TrainOptions]:
    """(config fields, options) from a POST /sliders/v1/train body."""
    if not isinstance(body, dict):
        raise SubmitError([("body", "expected a JSON object with the training settings")])
    config = {k: v for k, v in body.items() if k not in TRAIN_OPTION_FIELDS}
    options = {}
    for key in TRAIN_OPTION_FIELDS:
        if key in body:
            if not isinstance(body[key], bool):
                raise SubmitError([(key, "expected true or false")])
            options[key] = body[key]
    return config, TrainOptions(**options)


def register_training_routes(app, jobs) -> None:
    """``jobs`` is a callable returning the ``TrainingJobs``."""
    from fastapi import Body, HTTPException
    from fastapi.responses import JSONResponse

    def find(job_id: str):
        job = jobs().get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no training job {job_id!r}")
        return job

    @app.post("/sliders/v1/train")
    def start_training(body: dict = Body(...)):  # noqa: B008 — FastAPI's way to take the raw JSON body
        try:
            config, options = split_train_request(body)
            job = jobs().create(config, options)
        except SubmitError as err:
            return JSONResponse(status_code=422, content={"detail": [{"field": f, "problem": p} for f, p in err.errors]})
        jobs().start_in_background(job)
        return job.to_dict()

    @app.get("/sliders/v1/train")
    def list_training():
        return [job.to_dict() for job in jobs().jobs()]

    @app.get("/sliders/v1/train/{job_id}")
    def training_status(job_id: str):
        return find(job_id).to_dict()

    @app.post("/sliders/v1/train/{job_id}/cancel")
    def cancel_training(job_id: str):
        find(job_id)
        return jobs().cancel(job_id).to_dict()
