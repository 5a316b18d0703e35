"""Which image each row of the webui's UNet batch belongs to, and the α each applied slider gives those rows.

The webui's denoiser batch (``CFGDenoiser``): the cond rows of every image (one per ``AND`` sub-prompt, in image
order), then the uncond rows (one per image), then, for instruct-pix2pix, one more set of image rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..apply.cfg_rows import cfg_row_images
from ..apply.job_plan import BatchPlan


def row_images(images: int, rows: int, cond_rows: int, subprompts: Sequence[int] | None) -> list[int] | None:
    """Image of each of ``rows`` rows, or None when the layout can't be read. ``subprompts``: sub-prompts per image,
    needed only when there are more cond rows than images."""
    repeats = [1] * images if cond_rows == images else subprompts
    extra = rows - cond_rows
    if repeats is None or sum(repeats) != cond_rows or images == 0 or extra % images:
        return None
    # Uncond rows (and the image-conditioning rows of instruct-pix2pix) follow in image order.
    return cfg_row_images(list(repeats), include_uncond=False) + list(range(images)) * (extra // images)


def subprompt_counts(count: Callable[[Sequence[str]], list[int]] | None, p, images: int) -> list[int] | None:
    """``AND`` sub-prompts per image of the batch being sampled (the hires pass's prompts in that pass)."""
    if count is None or p is None:
        return None
    prompts = getattr(p, "hr_prompts", None) if getattr(p, "is_hr_pass", False) else None
    prompts = prompts or getattr(p, "prompts", None)
    if not prompts or len(prompts) != images:
        return None
    return count(prompts)


def plan_row_alphas(plan: BatchPlan, images_of_rows: Sequence[int] | None) -> list:
    """The applied sliders' α (``plan.sliders`` order): one number for a uniform slider or when the rows' images
    aren't known (None: the first image's), else one per row (``images_of_rows``: each row's image)."""
    alphas = []
    for planned in plan.sliders:
        if planned.is_uniform or images_of_rows is None:
            alphas.append(planned.image_alphas[0])
        else:
            alphas.append([planned.image_alphas[i] for i in images_of_rows])
    return alphas


def cond_rows(cond) -> int:
    """Rows of a conditioning: a tensor, or SDXL's dict of tensors (``DictWithShape``)."""
    if isinstance(cond, dict):
        return int(cond["crossattn"].shape[0])
    return int(cond.shape[0])
