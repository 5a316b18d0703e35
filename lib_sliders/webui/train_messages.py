"""What the Train page says, as HTML: refusals under the form's labels, import notes, the hint for a taken
name, and a finished job's result (with a warning when the slider does nothing measurable)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

from .train_form import ADVANCED_KEYS, FIELDS, FORM_FIELDS
from .train_jobs import TrainJob

_LABELS = {**{f.name: f.label for f in FORM_FIELDS}, "alpha_range": "Recommended α range",
           "pairs": "Image pairs", "prompts": "More prompts", "resume": "Resume", "advanced": "Other settings"}


def field_label(field: str) -> str:
    """The form's label for a TrainConfig field path (``prompts[0].positive`` → "Positive prompt")."""
    match = re.fullmatch(r"prompts\[(\d+)\]\.(\w+)", field)
    if match:
        index, key = int(match.group(1)), match.group(2)
        if index == 0 and key in FIELDS:
            return FIELDS[key].label
        return f"More prompts, entry {index}" if index else "First prompt"
    base = re.split(r"[\[.]", field, maxsplit=1)[0]
    if base in ADVANCED_KEYS:
        return f"Other settings ({base})"
    return _LABELS.get(base, field)


def error_lines(errors: Iterable[tuple[str, str]]) -> list[str]:
    """"Label (field): problem" for each refusal."""
    lines = []
    for field, problem in errors:
        label = field_label(field)
        lines.append(f"{label} ({field}): {problem}" if label != field else f"{field}: {problem}")
    return lines


def errors_html(errors: Iterable[tuple[str, str]], title: str = "Training did not start:") -> str:
    errors = list(errors)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in error_lines(errors))
    hint = ""
    if any(f == "name" and "exists" in p for f, p in errors):
        hint = "<p>Tick “Overwrite an existing slider” to replace it.</p>"
    return f"<div class='sliders-train-refused error'><p>{html.escape(title)}</p><ul>{items}</ul>{hint}</div>"


def name_hint_html(name: str, exists: bool) -> str:
    if not exists:
        return ""
    return (f"<p class='sliders-train-warning'>A slider named <b>{html.escape(name)}</b> exists: choose another "
            "name, or tick “Overwrite an existing slider” to replace it.</p>")


def notes_html(title: str, notes: Iterable[str]) -> str:
    notes = list(notes)
    if not notes:
        return f"<p>{html.escape(title)}</p>"
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"<div class='sliders-train-notes'><p>{html.escape(title)}</p><ul>{items}</ul></div>"


def _effect_html(job: TrainJob) -> str:
    effect = job.effect
    if not effect:
        return ""
    text = (f"Effect score: cosine {effect.get('cosine', 0.0):.2f}, gain {effect.get('gain', 0.0):.2f} per unit α "
            f"(α = −1: cosine {effect.get('cosine_negative', 0.0):.2f}, gain {effect.get('gain_negative', 0.0):.2f})")
    if job.does_nothing:
        return (f"<p class='sliders-train-warning' style='color: var(--color-accent, #e65100); font-weight: bold'>"
                f"⚠ This slider does nothing measurable. {html.escape(text)}<br>Try more iterations, a higher "
                f"learning rate, or prompts that differ more.</p>")
    return f"<p>{html.escape(text)}</p>"


def job_html(job: TrainJob) -> str:
    """The result area after a run: outcome, effect score (warning when it does nothing), file, messages, error."""
    name = html.escape(job.config.name)
    headline = {
        "done": f"Trained slider <b>{name}</b> ({job.iteration} iterations).",
        "cancelled": f"Cancelled <b>{name}</b> at iteration {job.iteration} of {job.total}.",
        "failed": f"Training <b>{name}</b> failed.",
    }.get(job.state, f"{name}: {html.escape(job.state)}")
    parts = [f"<p>{headline}</p>", _effect_html(job)]
    if job.output:
        parts.append(f"<p>Saved to <code>{html.escape(job.output)}</code></p>")
    if job.state == "cancelled" and job.iteration:
        parts.append("<p>Resume continues this run with the same settings.</p>")
    if job.messages:
        parts.append("<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in job.messages) + "</ul>")
    if job.error:
        parts.append(f"<p class='error'>{html.escape(job.error)}</p>")
    return "<div class='sliders-train-result'>" + "".join(p for p in parts if p) + "</div>"
