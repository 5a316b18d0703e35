"""Before/after image pairs written to a folder for image-slider tests: random dark textures, brightened after."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lib_sliders.training.config import ImagePair


def write_pairs(folder, count: int, size: tuple[int, int] = (64, 64), after_suffix: str = ".png",
                grey_after: bool = False) -> list[ImagePair]:
    """``count`` pairs; ``grey_after`` saves the after images in greyscale (the loader must convert them to RGB)."""
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(count):
        texture = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
        before, after = folder / f"{i}_before.png", folder / f"{i}_after{after_suffix}"
        Image.fromarray(texture).save(before)
        brighter = Image.fromarray(texture + 150)
        (brighter.convert("L") if grey_after else brighter).save(after)
        pairs.append(ImagePair(before=str(before), after=str(after)))
    return pairs
