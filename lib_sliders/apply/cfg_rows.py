"""Which image each row of a CFG batch belongs to, so every image can get its own α.

Samplers in the webui run all images of a batch through the UNet together (``CFGDenoiser``): first
the cond rows of every image (image i repeated once per ``AND`` sub-prompt), then one uncond row per
image. Both halves of an image get its α, as in the official inference and the built-in Lora.
Some options drop the uncond rows on early steps ("skip early cond"); the cond rows keep their order.
"""

from __future__ import annotations

from collections.abc import Sequence


def cfg_row_images(repeats: Sequence[int], include_uncond: bool = True) -> list[int]:
    """Image index of every UNet row: ``repeats[i]`` cond rows for image i, then one uncond row per image."""
    rows = [image for image, count in enumerate(repeats) for _ in range(count)]
    if include_uncond:
        rows += list(range(len(repeats)))
    return rows


def job_image_indices(batch_number: int, batch_size: int) -> list[int]:
    """Indices within the whole job (all batches of a generation) of the images of batch ``batch_number``."""
    return [batch_number * batch_size + i for i in range(batch_size)]


