"""txt2img over the real webui's HTTP API, with and without sliders (see conftest.py for the setup)."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.integration

PROMPT = "a photo of a cat"


def differs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_extension_is_loaded(webui):
    scripts = webui.request("GET", "/sdapi/v1/scripts")
    assert "concept sliders" in scripts["txt2img"] and "concept sliders" in scripts["img2img"]
    names = {s["name"]: s for s in webui.request("GET", "/sliders/v1/sliders")}
    assert {"it_age", "it_text", "it_xl"} <= set(names)
    assert names["it_age"]["alpha_range"] == [-4.0, 4.0] and names["it_xl"]["arch"] == "sdxl"


def test_alpha_zero_is_bitwise_the_plain_image(webui, baseline):
    image, _ = webui.txt2img(f"{PROMPT} <slider:it_age:0>")
    assert np.array_equal(image[0], baseline)
    image, _ = webui.txt2img(PROMPT, alwayson_scripts=webui.slider_args([{"name": "it_age", "alpha": 0}]))
    assert np.array_equal(image[0], baseline)


def test_a_tag_changes_the_image_and_is_gone_afterwards(webui, baseline):
    image, info = webui.txt2img(f"{PROMPT} <slider:it_age:2>")
    assert differs(image[0], baseline) > 2.0
    assert "<slider:it_age:2>" in info["infotexts"][0]  # the tag stays in the prompt: it round-trips
    assert "Slider hashes: " in info["infotexts"][0]
    after, _ = webui.txt2img(PROMPT)
    assert np.array_equal(after[0], baseline)  # weights and hooks as before


def test_api_args_equal_the_tag(webui):
    tagged, _ = webui.txt2img(f"{PROMPT} <slider:it_age:2>")
    requested, info = webui.txt2img(PROMPT, alwayson_scripts=webui.slider_args([{"name": "it_age", "alpha": 2}]))
    assert np.array_equal(tagged[0], requested[0])
    assert 'Sliders: "it_age:2"' in info["infotexts"][0]  # the webui JSON-quotes values with ":"
    disabled, _ = webui.txt2img(PROMPT, alwayson_scripts=webui.slider_args([{"name": "it_age", "alpha": 2}],
                                                                             enabled=False))
    assert not np.array_equal(disabled[0], requested[0])


def test_strip_image_i_equals_that_image_alone(webui):
    strip, info = webui.txt2img(f"{PROMPT} <slider:it_age:-2..2>", seed=10, batch_size=3)
    for i, alpha in enumerate([-2, 0, 2]):
        alone, _ = webui.txt2img(f"{PROMPT} <slider:it_age:{alpha}>", seed=10)
        assert differs(strip[i], alone[0]) < 0.5, f"image {i} (α={alpha})"
    assert differs(strip[0], strip[2]) > 1.0


def test_accordion_strip_across_batches_records_each_images_alpha(webui):
    sliders = [{"name": "it_age", "alpha": "-2..2"}]
    images, info = webui.txt2img(PROMPT, seed=20, n_iter=3, alwayson_scripts=webui.slider_args(sliders))
    recorded = [t.split("Sliders: ")[1].split(", ")[0] for t in info["infotexts"]]
    assert recorded == ['"it_age:-2"', '"it_age:0"', '"it_age:2"']
    assert all("Seed: 20," in t for t in info["infotexts"])  # a strip: one seed, several α
    alone, _ = webui.txt2img(PROMPT, seed=20, alwayson_scripts=webui.slider_args([{"name": "it_age", "alpha": 2}]))
    assert differs(images[2], alone[0]) < 0.5


def test_text_encoder_slider_from_the_accordion_is_not_served_from_the_cond_cache(webui, baseline):
    by_tag, _ = webui.txt2img(f"{PROMPT} <slider:it_text:2>")
    assert differs(by_tag[0], baseline) > 1.0
    plain, _ = webui.txt2img(PROMPT)  # conds for the plain prompt are cached now
    assert np.array_equal(plain[0], baseline)
    by_args, _ = webui.txt2img(PROMPT, alwayson_scripts=webui.slider_args([{"name": "it_text", "alpha": 2}]))
    assert np.array_equal(by_args[0], by_tag[0])
    plain, _ = webui.txt2img(PROMPT)
    assert np.array_equal(plain[0], baseline)


def test_broken_sliders_are_skipped_and_named_in_the_console(webui, baseline):
    images, _ = webui.txt2img(f"{PROMPT} <slider:it_xl:1> <slider:nope:1> <slider:it_age:oops>")
    assert np.array_equal(images[0], baseline)
    log = os.environ.get("SD_WEBUI_LOG")
    if log:
        text = open(log, encoding="utf8", errors="replace").read()
        assert "it_xl.safetensors: made for SDXL" in text
        assert "<slider:nope:1>: slider 'nope' not found" in text
        assert "<slider:it_age:oops>: α 'oops' is not a number" in text


def test_png_info_round_trip(webui):
    images, info = webui.txt2img(PROMPT, alwayson_scripts=webui.slider_args([{"name": "it_age", "alpha": -1.5,
                                                                               "start": 0.25}]))
    params = webui.request("POST", "/sdapi/v1/png-info", {"image": "data:image/png;base64," + _png_b64(images[0],
                                                                                                     info)})
    assert params["parameters"]["Sliders"] == "it_age:-1.5@0.25"
    assert "it_age" in params["parameters"]["Slider hashes"]


def _png_b64(image: np.ndarray, info: dict) -> str:
    import base64
    import io

    from PIL import Image, PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", info["infotexts"][0])
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode()


def test_xyz_plot_over_alpha(webui):
    info = {s["name"]: s for s in webui.request("GET", "/sdapi/v1/script-info")
            if s["name"] == "x/y/z plot" and not s["is_img2img"]}["x/y/z plot"]
    labels = info["args"][0]["choices"]
    axis = labels.index("[Sliders] α: it_age")
    args = [axis, "-2, 0, 2", [], 0, "", [], 0, "", [], True, True, False, False, 0, 0, 0, 0, False]
    args += [True] * (len(info["args"]) - len(args))  # dev added "draw grid"
    images, result = webui.txt2img(PROMPT, seed=30, script_name="x/y/z plot", script_args=args)
    cells = images[1:4] if len(images) > 3 else images
    for cell, alpha in zip(cells, [-2, 0, 2], strict=True):
        alone, _ = webui.txt2img(f"{PROMPT} <slider:it_age:{alpha}>", seed=30)
        assert differs(cell, alone[0]) < 0.5, f"α={alpha}"
    plain, _ = webui.txt2img(PROMPT, seed=30)
    assert np.array_equal(plain[0], webui.txt2img(f"{PROMPT} <slider:it_age:0>", seed=30)[0][0])


@pytest.mark.parametrize("batch_cond_uncond", [False])
def test_chunked_cfg_calls_give_the_same_strip(webui, batch_cond_uncond):
    settings = {"batch_cond_uncond": batch_cond_uncond}
    strip, _ = webui.txt2img(f"{PROMPT} <slider:it_age:-2..2>", seed=40, batch_size=3,
                             override_settings=settings)
    for i, alpha in enumerate([-2, 0, 2]):
        alone, _ = webui.txt2img(f"{PROMPT} <slider:it_age:{alpha}>", seed=40)
        assert differs(strip[i], alone[0]) < 0.5


LONG_PROMPT = PROMPT + ", " + ", ".join(f"detail {i}" for i in range(60))  # ~180 tokens: three 75-token chunks


@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_long_prompt_strip_equals_singles(webui, batch_cond_uncond):
    # Prompt (3 chunks) and negative prompt (1 chunk) differ in length, so the webui sends the cond rows and
    # the uncond rows in separate UNet calls.
    fields = {"negative_prompt": "blurry", "override_settings": {"batch_cond_uncond": batch_cond_uncond}}
    strip, _ = webui.txt2img(f"{LONG_PROMPT} <slider:it_age:-2..2>", seed=50, batch_size=3, **fields)
    for i, alpha in enumerate([-2, 0, 2]):
        alone, _ = webui.txt2img(f"{LONG_PROMPT} <slider:it_age:{alpha}>", seed=50, **fields)
        assert differs(strip[i], alone[0]) < 0.5, f"image {i} (α={alpha})"
    assert differs(strip[0], strip[2]) > 1.0


def _init_image(image: np.ndarray) -> str:
    return "data:image/png;base64," + _png_b64(image, {"infotexts": [""]})


def test_img2img(webui, baseline):
    # The webui samples the VAE posterior of the init image from the unseeded global RNG, so two plain
    # img2img runs already differ a little: compare against that noise floor.
    body = {"prompt": PROMPT, "init_images": [_init_image(baseline)], "denoising_strength": 0.6, "seed": 3,
            "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler"}

    def run(prompt):
        return decode_all(webui.request("POST", "/sdapi/v1/img2img", {**body, "prompt": prompt}))[0]

    plain, again = run(PROMPT), run(PROMPT)
    noise = differs(plain, again)
    zero, moved = run(f"{PROMPT} <slider:it_age:0>"), run(f"{PROMPT} <slider:it_age:3>")
    assert differs(plain, zero) < 3 * noise + 0.5
    assert differs(plain, moved) > 3 * noise + 2.0


def test_hires_fix_strip(webui):
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "denoising_strength": 0.5,
             "hr_upscaler": "Latent"}
    if webui.forge:  # Forge (dfdcbab) fails a hires job that doesn't name them: processing.py:1405 'in None'
        hires["hr_additional_modules"] = ["Use same choices"]
    strip, _ = webui.txt2img(f"{PROMPT} <slider:it_age:-2..2>", seed=50, batch_size=2, **hires)
    assert strip[0].shape == (96, 96, 3)
    for i, alpha in enumerate([-2, 2]):
        alone, _ = webui.txt2img(f"{PROMPT} <slider:it_age:{alpha}>", seed=50, **hires)
        assert differs(strip[i], alone[0]) < 0.5


def test_the_builtin_lora_gives_what_the_slider_gives_and_both_combine(webui):
    webui.request("POST", "/sdapi/v1/refresh-loras")
    baseline, _ = webui.txt2img(PROMPT)
    baseline = baseline[0]
    lora, _ = webui.txt2img(f"{PROMPT} <lora:it_lora:1>")
    slider, _ = webui.txt2img(f"{PROMPT} <slider:it_age:1>")
    assert differs(lora[0], baseline) > 1.0
    assert differs(lora[0], slider[0]) < 0.5  # same file, webui's merge math vs our hooks
    both_zero, _ = webui.txt2img(f"{PROMPT} <lora:it_lora:1> <slider:it_age:0>")
    assert np.array_equal(both_zero[0], lora[0])
    both, _ = webui.txt2img(f"{PROMPT} <lora:it_lora:1> <slider:it_age:2>")
    three, _ = webui.txt2img(f"{PROMPT} <slider:it_age:3>")
    assert differs(both[0], three[0]) < 0.5
    plain, _ = webui.txt2img(PROMPT)
    assert np.array_equal(plain[0], baseline)


def test_merge_mode_matches_hooks_and_steps_aside_for_lora(webui):
    baseline, _ = webui.txt2img(PROMPT)
    baseline = baseline[0]
    merge = {"sliders_apply_mode": "Merge one-α sliders when no Lora is active (fastest)"}
    hooked, _ = webui.txt2img(f"{PROMPT} <slider:it_age:2>")
    merged, _ = webui.txt2img(f"{PROMPT} <slider:it_age:2>", override_settings=merge)
    assert differs(hooked[0], merged[0]) < 0.5
    plain, _ = webui.txt2img(PROMPT, override_settings=merge)
    assert np.array_equal(plain[0], baseline)  # merged weights restored bitwise
    lora, _ = webui.txt2img(f"{PROMPT} <lora:it_lora:1>")
    with_lora, _ = webui.txt2img(f"{PROMPT} <lora:it_lora:1> <slider:it_age:2>", override_settings=merge)
    three, _ = webui.txt2img(f"{PROMPT} <slider:it_age:3>")
    assert differs(with_lora[0], three[0]) < 0.5
    again, _ = webui.txt2img(f"{PROMPT} <lora:it_lora:1>")
    assert np.array_equal(again[0], lora[0])
    plain, _ = webui.txt2img(PROMPT)
    assert np.array_equal(plain[0], baseline)


def decode_all(result: dict) -> list[np.ndarray]:
    from integration.conftest import decode

    return [decode(image) for image in result["images"]]


def test_and_prompts_keep_each_images_alpha(webui):
    prompt = f"{PROMPT} AND a red hat :0.5 <slider:it_age:-2..2>"
    strip, _ = webui.txt2img(prompt, seed=60, batch_size=2)
    for i, alpha in enumerate([-2, 2]):
        alone, _ = webui.txt2img(f"{PROMPT} AND a red hat :0.5 <slider:it_age:{alpha}>", seed=60)
        assert differs(strip[i], alone[0]) < 0.5


def test_sliders_follow_a_refiner_swap(webui):
    # The refiner here is a copy of the same checkpoint (SD 1.x refiners are allowed): with sliders re-attached
    # to whichever model object samples, the result equals the run without a refiner.
    refiner = [c["title"] for c in webui.request("GET", "/sdapi/v1/sd-models") if "it-refiner" in c["title"]]
    if not refiner:
        pytest.skip("copy the checkpoint to models/Stable-diffusion/it-refiner.safetensors to run this test")
    fields = {"seed": 70, "steps": 4}
    plain, _ = webui.txt2img(f"{PROMPT} <slider:it_age:2>", **fields)
    refined, _ = webui.txt2img(f"{PROMPT} <slider:it_age:2>", refiner_checkpoint=refiner[0],
                               refiner_switch_at=0.5, **fields)
    assert differs(plain[0], refined[0]) < 0.5
    without, _ = webui.txt2img(PROMPT, refiner_checkpoint=refiner[0], refiner_switch_at=0.5, **fields)
    assert differs(without[0], refined[0]) > 1.0


def test_sliders_follow_a_switch_back_to_an_already_loaded_checkpoint(webui, baseline):
    """With "Maximum number of checkpoints loaded at the same time" = 2 the webui switches to a model it still holds
    without the model-loaded callback ("Using already loaded model"): sliders must act on whichever model samples.

    Needs a second checkpoint of the loaded model's kind whose name contains ``it-other`` (see
    ``make_random_checkpoint.py --seed``)."""
    if webui.forge:
        pytest.skip("AUTOMATIC1111 only: Forge keeps one model (forge_model_reload unloads the others on a switch) "
                    "and never reads sd_checkpoints_limit")
    options = webui.request("GET", "/sdapi/v1/options")
    first, limit = options["sd_model_checkpoint"], options["sd_checkpoints_limit"]
    webui.request("POST", "/sdapi/v1/refresh-checkpoints")
    # The webui's refresh sets the option to --ckpt's file whatever is loaded (the next job would load that): undo.
    webui.request("POST", "/sdapi/v1/options", {"sd_model_checkpoint": first})
    other = [c["title"] for c in webui.request("GET", "/sdapi/v1/sd-models") if "it-other" in c["title"]]
    if not other:
        pytest.skip("make a second checkpoint of the same kind as models/Stable-diffusion/it-other-*.safetensors "
                    "(tests/integration/make_random_checkpoint.py --seed 2) to run this test")
    tag = f"{PROMPT} <slider:it_age:2>"
    before, _ = webui.txt2img(tag)
    seen = {}
    webui.request("POST", "/sdapi/v1/options", {"sd_checkpoints_limit": 2})
    try:
        for checkpoint in [other[0], first, other[0]]:  # B loaded (callback), then A and B reused (none)
            webui.request("POST", "/sdapi/v1/options", {"sd_model_checkpoint": checkpoint})
            plain, info = webui.txt2img(PROMPT)
            assert info["sd_model_name"] and info["sd_model_name"] in checkpoint, (info["sd_model_name"], checkpoint)
            tagged, _ = webui.txt2img(tag)
            zero, _ = webui.txt2img(f"{PROMPT} <slider:it_age:0>")
            assert np.array_equal(zero[0], plain[0]), checkpoint
            assert differs(tagged[0], plain[0]) > 2.0, checkpoint
            if checkpoint in seen:
                assert np.array_equal(plain[0], seen[checkpoint][0]), checkpoint
                assert np.array_equal(tagged[0], seen[checkpoint][1]), checkpoint
            seen[checkpoint] = plain[0], tagged[0]
        assert np.array_equal(seen[first][0], baseline) and np.array_equal(seen[first][1], before[0])
        assert differs(seen[other[0]][0], baseline) > 2.0  # it did sample with the other model
    finally:
        # Limit first: switching back to A then drops B (gigabytes) from the loaded models.
        webui.request("POST", "/sdapi/v1/options", {"sd_checkpoints_limit": limit})
        webui.request("POST", "/sdapi/v1/options", {"sd_model_checkpoint": first})
