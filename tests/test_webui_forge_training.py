"""Training sliders on SD WebUI Forge (``lib_sliders/webui/forge_training.py``), against the Forge double.

The Forge double's UNet is ComfyUI's (Forge's kind, ``ForgeOperations`` Linears) holding the A1111 double's toy
weights, so a slider trained on Forge must be the one trained on A1111 up to float rounding. Training starts from
the bare model even when Forge has a LoRA merged, and leaves ``forge_objects``, the weights, hooks and patchers as
Forge had them. Forge Classic / reForge (no Forge backend) still refuse.
"""

from __future__ import annotations

import sys

import pytest
import torch
from webui_double import forge_double
from webui_double.conftest_helpers import assert_model_untouched
from webui_double.forge_double import load_model_gpu

from lib_sliders.files.slider_file import load_slider

pytestmark = pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning")

CONFIG = {"name": "forge_age", "prompts": [{"target": "person", "positive": "person, very old",
                                           "negative": "person, very young", "guidance": 2.0}],
          "iterations": 3, "resolution": 64, "max_denoising_steps": 4, "rank": 2, "lr": 1e-2, "seed": 1,
          "alpha_range": [-3.0, 3.0], "estimate_start": False, "preview": False}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with forge_double.forge_webui_env(str(tmp_path_factory.mktemp("webui"))) as environment:
        yield environment


@pytest.fixture(autouse=True)
def fresh(env):
    from modules import shared

    env.reset()
    shared.sd_model = env.forge_model
    yield
    model = env.forge_model
    shared.sd_model = model
    assert_model_untouched(model.forge_objects.unet.model, env.forge_saved)
    assert model.forge_objects.unet is model.forge_objects_after_applying_lora.unet


def train(env, name="forge_age", **overrides):
    """One job through the jobs API, run in this thread (as the API's worker would, holding the queue lock)."""
    from lib_sliders.webui.train_jobs import TrainOptions

    jobs = sys.modules["lib_sliders.webui.script"].training_jobs
    config = {**CONFIG, "name": name, **overrides}
    config.pop("preview")
    job = jobs.create(config, TrainOptions(overwrite=True, preview=False))
    jobs.run(job)
    assert job.state == "done", (job.state, job.error)
    return job


def a1111_twin(env, name, monkeypatch):
    """The same job on the A1111 double's model (the weights Forge's UNet was built from), as on A1111."""
    from modules import sd_hijack, shared

    from lib_sliders.webui import host_kind

    with monkeypatch.context() as patch:
        patch.setattr(host_kind, "forge_installed", lambda: False)
        patch.setattr(sd_hijack, "undo_optimizations", lambda: None, raising=False)
        patch.setattr(sd_hijack, "apply_optimizations", lambda: None, raising=False)
        shared.sd_model = env.model
        try:
            return train(env, name)
        finally:
            shared.sd_model = env.forge_model


def test_a_slider_trained_on_forge_is_the_one_trained_on_a1111(env, monkeypatch):
    forge_job = train(env, "on_forge")
    a1111_job = a1111_twin(env, "on_a1111", monkeypatch)
    forge, a1111 = load_slider(forge_job.output), load_slider(a1111_job.output)
    assert set(forge.unet) == set(a1111.unet) and forge.unet
    # Two UNet codes (ComfyUI's, ldm's) differ in float rounding, and Adam's first steps are ±lr for any gradient
    # size, so elements whose gradient is near 0 may differ: the slider as a whole must be the same.
    ups = [torch.cat([m.up.flatten() for _, m in sorted(s.unet.items())]) for s in (forge, a1111)]
    assert float(torch.nn.functional.cosine_similarity(*ups, dim=0)) > 0.999
    assert forge_job.loss == pytest.approx(a1111_job.loss, rel=1e-3)
    assert forge.metadata.get("ss_base_model_version") == a1111.metadata.get("ss_base_model_version")
    assert bool(any(m.up.abs().max() > 0 for m in forge.unet.values())), "the slider learned something"
    # and it generates on Forge
    base = env.run(env.make_p("a photo of a person")).latents
    assert not torch.equal(env.run(env.make_p("a photo of a person <slider:on_forge:3>")).latents, base)


def test_training_starts_from_the_bare_model_beside_a_merged_lora_and_gives_it_back(env):
    """Forge merged a LoRA into the UNet for the last generation: training loads the un-patched patcher (Forge puts
    its backups back), and the next generation has the LoRA merged again."""
    model = env.forge_model
    original = model.forge_objects_after_applying_lora
    path = "input_blocks.1.1.transformer_blocks.0.attn2.to_k"
    weight = env.forge_saved[f"diffusion_model.{path}.weight"]
    with_lora = forge_double.with_lora_patch(original, path, weight, scale=0.3)
    plain = train(env, "bare")
    model.forge_objects_after_applying_lora = with_lora
    try:
        with_lora_image = env.run(env.make_p("a photo of a person")).latents
        layer = model.forge_objects.unet.model.diffusion_model.get_submodule(path)
        assert not torch.equal(layer.weight, weight), "the LoRA is merged"
        beside = train(env, "beside_lora")
        assert model.forge_objects.unet is with_lora.unet
        for name, module in load_slider(plain.output).unet.items():
            assert torch.equal(module.up, load_slider(beside.output).unet[name].up), name
        assert torch.equal(env.run(env.make_p("a photo of a person")).latents, with_lora_image)
    finally:
        model.forge_objects_after_applying_lora = original
        model.forge_objects = original.shallow_copy()
        load_model_gpu(original.unet)


def test_a_quantized_unet_is_refused_and_forge_objects_are_put_back(env, monkeypatch):
    from lib_sliders.webui import forge_training

    monkeypatch.setattr(forge_training, "quantized_layers", lambda backend: ["input_blocks.1.1.proj_in"] * 3)
    from lib_sliders.webui.train_jobs import TrainOptions

    jobs = sys.modules["lib_sliders.webui.script"].training_jobs
    config = {**CONFIG, "name": "quantized"}
    config.pop("preview")
    job = jobs.run(jobs.create(config, TrainOptions(overwrite=True, preview=False)))
    assert job.state == "failed" and "stores input_blocks.1.1.proj_in (and 2 more) quantized" in job.error


def test_forge_classic_without_forges_backend_still_refuses(env, monkeypatch):
    from lib_sliders.webui import host_kind
    from lib_sliders.webui.train_jobs import SubmitError

    monkeypatch.setattr(host_kind, "forge_backend_installed", lambda: False)
    config = {**CONFIG, "name": "classic"}
    config.pop("preview")
    jobs = sys.modules["lib_sliders.webui.script"].training_jobs
    with pytest.raises(SubmitError) as refused:
        jobs.create(config)
    ((field, problem),) = refused.value.errors
    assert field == "webui" and "needs SD WebUI Forge's own backend" in problem
    assert "Needs SD WebUI Forge's own backend" not in (host_kind.ui_note(host_kind.TRAINING) or "")
    assert host_kind.ui_note(host_kind.TRAINING).startswith("Training sliders needs SD WebUI Forge's own backend")


def test_a_v_prediction_model_trains_as_on_a1111(env, monkeypatch):
    """SD 2.x 768-v: Forge's predictor says ``v_prediction``; the UNet's v is turned into ε as on A1111 (where the
    model says ``parameterization = "v"``), and the file records the prediction type."""
    predictor = env.forge_model.forge_objects.unet.model.predictor
    monkeypatch.setattr(predictor, "prediction_type", "v_prediction")
    monkeypatch.setattr(env.model, "parameterization", "v", raising=False)
    forge_job = train(env, "v_on_forge")
    a1111_job = a1111_twin(env, "v_on_a1111", monkeypatch)
    forge, a1111 = load_slider(forge_job.output), load_slider(a1111_job.output)
    ups = [torch.cat([m.up.flatten() for _, m in sorted(s.unet.items())]) for s in (forge, a1111)]
    assert float(torch.nn.functional.cosine_similarity(*ups, dim=0)) > 0.999
    assert forge_job.loss == pytest.approx(a1111_job.loss, rel=1e-3)
    assert forge.metadata["modelspec.prediction_type"] == a1111.metadata["modelspec.prediction_type"] == "v"


def test_training_before_the_first_image_loads_the_chosen_checkpoint_as_forge_does(env, monkeypatch):
    """Forge loads the checkpoint at a job's start (``sd_models.forge_model_reload``); until then ``shared.sd_model``
    is a placeholder (``FakeInitialModel``). Training loads it the same way instead of refusing the placeholder."""
    from modules import sd_models, shared

    class FakeInitialModel:  # modules/sd_models.py at dfdcbab: what shared.sd_model is before the first job
        pass

    def forge_model_reload():
        shared.sd_model = env.forge_model
        return env.forge_model, True

    monkeypatch.setattr(sd_models, "forge_model_reload", forge_model_reload, raising=False)
    shared.sd_model = FakeInitialModel()
    job = train(env, "before_first_image")
    assert load_slider(job.output).unet and shared.sd_model is env.forge_model
