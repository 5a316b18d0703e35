"""Per-image α through the webui's CFG batch layout, checked on a real UNet: each image of a batch gets
exactly what it gets when generated alone, AND prompts and skipped uncond rows included."""

import torch

from bench.common.random_sliders import random_slider
from bench.common.tiny_models import build_unet, unet_inputs
from lib_sliders.apply.cfg_rows import cfg_row_images, job_image_indices
from lib_sliders.apply.engine import ActiveSlider, SliderEngine


def row_alphas(image_alphas, row_images):
    """Per-row α from per-image α and the row → image map (what the webui runtime builds for the engine)."""
    return [float(image_alphas[image]) for image in row_images]

def test_row_layout_follows_the_cfg_denoiser():
    assert cfg_row_images([1, 1, 1]) == [0, 1, 2, 0, 1, 2]
    assert cfg_row_images([2, 1]) == [0, 0, 1, 0, 1]  # image 0 has an AND prompt
    assert cfg_row_images([1, 1], include_uncond=False) == [0, 1]
    assert job_image_indices(2, 3) == [6, 7, 8]
    assert row_alphas([-2.0, 0.5], cfg_row_images([2, 1])) == [-2.0, -2.0, 0.5, -2.0, 0.5]


def test_each_image_of_a_cfg_batch_gets_its_own_alpha():
    unet = build_unet("sd1")
    slider = random_slider(unet, "noxattn", seed=9)
    repeats = [2, 1, 1]  # image 0 has two AND sub-prompts
    image_alphas = [-2.0, 0.0, 1.5]
    rows = cfg_row_images(repeats)
    inputs = unet_inputs(unet, "sd1", batch=len(rows), seed=3)
    engine = SliderEngine(unet)
    with torch.no_grad():
        engine.apply([ActiveSlider(slider, row_alphas(image_alphas, rows))])
        together = unet(**inputs)
        for row, image in enumerate(rows):
            engine.apply([ActiveSlider(slider, image_alphas[image])])
            alone = unet(**{k: v[row:row + 1] for k, v in inputs.items()})
            torch.testing.assert_close(together[row:row + 1], alone, atol=1e-5, rtol=1e-5)
        # skip-early-cond: the same α vector, only the cond rows are run
        engine.apply([ActiveSlider(slider, row_alphas(image_alphas, rows))])
        cond_rows = len(cfg_row_images(repeats, include_uncond=False))
        engine.set_step(0, 10)
        first = unet(**{k: v[:cond_rows] for k, v in inputs.items()})
        torch.testing.assert_close(first, together[:cond_rows], atol=1e-5, rtol=1e-5)
        engine.clear()
