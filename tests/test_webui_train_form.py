"""The Train page's form logic (``lib_sliders.webui.train_form*``, ``train_uploads``, ``train_messages``), without
gradio or the webui; one small check that ``train_tab.create_tab`` builds with stand-ins for
``modules.call_queue``/``modules.shared``."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from lib_sliders.training.config import DEFAULT_LR, ImagePair, TextPrompt, TrainConfig
from lib_sliders.training.importers.config_file import import_file
from lib_sliders.webui import train_form, train_form_fill, train_form_parse, train_messages, train_uploads
from lib_sliders.webui.train_form import FIELD_NAMES, FORM_FIELDS, defaults
from lib_sliders.webui.train_form_fill import config_to_form
from lib_sliders.webui.train_form_parse import form_to_json, form_to_request
from lib_sliders.webui.train_jobs import SubmitError, TrainingHost, TrainingJobs, TrainJob, TrainOptions

DOUBLE_MODULES = Path(__file__).parent / "webui_double" / "modules"


def png(path, shade=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(path)
    return str(path)


def text_values(**changes):
    values = defaults()
    values.update(name="age", target="person", positive="person, very old", negative="person, very young")
    values.update(changes)
    return values


def image_values(before_dir, after_dir, **changes):
    values = defaults()
    values.update(name="light", mode="Image slider", before_dir=str(before_dir), after_dir=str(after_dir))
    values.update(changes)
    return values


def fields_of(excinfo) -> list[str]:
    return [field for field, _ in excinfo.value.errors]


def roundtrip(config: TrainConfig) -> TrainConfig:
    built, _ = form_to_request({**defaults(), **config_to_form(config)})
    return TrainConfig.from_dict(built)


# ---------------------------------------------------------------------------------------------- fields


def test_fields_are_ordered_and_default_to_the_configs_defaults():
    assert FIELD_NAMES[:3] == ["name", "mode", "target"]
    assert FIELD_NAMES[-2:] == ["overwrite", "preview"]
    assert len(set(FIELD_NAMES)) == len(FORM_FIELDS)
    values = defaults()
    base = TrainConfig(name="")
    assert values["mode"] == "Text slider" and values["scales"] == "1"
    assert (values["rank"], values["iterations"], values["preset"], values["lr"]) == (
        base.rank, base.iterations, base.preset, None)
    assert (values["alpha_low"], values["alpha_high"]) == base.alpha_range
    assert (values["action"], values["guidance"]) == ("enhance", TextPrompt("", "p", "").guidance)
    assert values["overwrite"] is False and values["preview"] is True
    assert all(field.label for field in FORM_FIELDS)


def test_mode_visibility():
    assert train_form.mode_visibility("Text slider") == (True, False)
    assert train_form.mode_visibility("Image slider") == (False, True)
    assert train_form.mode_of("image") == "image"


# ---------------------------------------------------------------------------------------------- text sliders


def test_text_form_to_request():
    config, options = form_to_request(text_values(preservation="male\n\n  female  \n", neutral="",
                                                  overwrite=True, preview=False))
    assert config["mode"] == "text" and config["pairs"] == []
    [prompt] = config["prompts"]
    assert prompt["target"] == "person" and prompt["neutral"] is None
    assert prompt["preservation"] == ["male", "female"]
    assert options == TrainOptions(overwrite=True, resume=False, preview=False)
    assert form_to_request(text_values(), resume=True)[1].resume is True
    TrainConfig.from_dict(config).validate()


@pytest.mark.parametrize("lr", [None, "", 0, 0.0, "0", "  "])
def test_empty_or_zero_lr_means_the_modes_default(lr):
    config, _ = form_to_request(text_values(lr=lr))
    assert config["lr"] is None
    assert TrainConfig.from_dict(config).learning_rate == DEFAULT_LR["text"]


def test_lr_given_as_text_or_number():
    assert form_to_request(text_values(lr="3e-4"))[0]["lr"] == pytest.approx(3e-4)
    assert form_to_request(text_values(lr=1e-5))[0]["lr"] == pytest.approx(1e-5)


def test_text_round_trip_keeps_every_prompt_and_setting():
    config = TrainConfig(
        name="age (v2)", prompts=[
            TextPrompt(target="person", positive="person, old", negative="person, young", neutral="a photo",
                       preservation=["male", "female"], action="erase", guidance=2.5, weight=2.0),
            TextPrompt(target="", positive="old", negative="young"),
        ],
        rank=8, alpha=4.0, preset="xattn", iterations=300, lr=1e-4, resolution=768, batch_size=2, seed=7,
        precision="bf16", gradient_checkpointing=True, alpha_range=(-2.0, 4.0), default_start=0.2, estimate_start=False,
        train_from_start=True, max_denoising_steps=30, sampling_guidance=5.0, checkpoint_every=50, weight_decay=0.0,
        train_among=["smile", "hair (long)"], among_alphas=[-1.0, 1.0],
    )
    form = config_to_form(config)
    assert form["mode"] == "Text slider" and form["preservation"] == "male\nfemale"
    assert json.loads(form["more_prompts"])[0]["positive"] == "old"
    assert json.loads(form["advanced"]) == {"weight_decay": 0.0, "max_denoising_steps": 30,
                                            "sampling_guidance": 5.0, "checkpoint_every": 50,
                                            "among_alphas": [-1.0, 1.0], "weight": 2.0}
    assert form["train_among"] == ["smile", "hair (long)"] and form["train_from_start"] is True
    assert roundtrip(config) == config


@pytest.mark.parametrize("value", [["smile", " hair ", ""], "smile, hair,", ("smile", "hair")])
def test_sliders_to_train_among_come_as_the_multiselects_list_or_a_comma_list(value):
    config, _ = form_to_request(text_values(train_among=value))
    assert config["train_among"] == ["smile", "hair"]
    config, _ = form_to_request(text_values())
    assert config["train_among"] == []


def test_default_config_has_empty_extras():
    form = config_to_form(TrainConfig(name="x", prompts=[TextPrompt("a", "b", "c")]))
    assert form["more_prompts"] == "" and form["advanced"] == "" and form["lr"] is None
    assert form["train_among"] == []
    assert "overwrite" not in form and "preview" not in form


# ---------------------------------------------------------------------------------------------- image sliders


def make_folders(tmp_path, stems=("01", "02")):
    before, after = tmp_path / "low", tmp_path / "high"
    for i, stem in enumerate(stems):
        png(before / f"{stem}.png", 10 * i)
        png(after / f"{stem.upper()}.jpg", 200)
    return before, after


def test_image_folders_are_matched_by_stem(tmp_path):
    before, after = make_folders(tmp_path, ("01", "b2"))
    config, _ = form_to_request(image_values(before, after, scales="1, 2; 4", image_prompt="a room"))
    assert config["mode"] == "image" and config["prompts"] == []
    assert [(os.path.basename(p["before"]), os.path.basename(p["after"])) for p in config["pairs"]] == [
        ("01.png", "01.jpg"), ("b2.png", "B2.jpg")]
    assert config["scales"] == [1.0, 2.0, 4.0] and config["image_prompt"] == "a room"


def test_image_round_trip(tmp_path):
    before, after = make_folders(tmp_path)
    config, _ = form_to_request(image_values(before, after, scales="0.5 1.5", lr=2e-5))
    original = TrainConfig.from_dict(config)
    form = config_to_form(original)
    assert (form["before_dir"], form["after_dir"]) == (str(before), str(after))
    assert form["mode"] == "Image slider" and form["scales"] == "0.5, 1.5"
    assert roundtrip(original) == original
    assert any("2 image pairs" in note for note in train_form_fill.form_notes(original))


def test_uploaded_pairs_are_added(tmp_path):
    before, after = make_folders(tmp_path, ("01",))
    extra = [ImagePair(before=png(tmp_path / "u" / "x.png"), after=png(tmp_path / "v" / "x.png", 9))]
    config, _ = form_to_request(image_values(before, after), extra)
    assert len(config["pairs"]) == 2 and config["pairs"][1]["before"].endswith("x.png")
    config, _ = form_to_request(image_values("", ""), [(extra[0].before, extra[0].after)])
    assert len(config["pairs"]) == 1
    # Uploads staged into the folder the form also names count once.
    folder_pairs = form_to_request(image_values(before, after))[0]["pairs"]
    config, _ = form_to_request(image_values(before, after), [(p["before"], p["after"]) for p in folder_pairs])
    assert config["pairs"] == folder_pairs


def test_image_pair_problems_name_pairs(tmp_path):
    before, after = make_folders(tmp_path)
    png(before / "03.png")
    with pytest.raises(SubmitError) as excinfo:
        form_to_request(image_values(before, after))
    assert fields_of(excinfo) == ["pairs"] and "03.png" in excinfo.value.errors[0][1]
    with pytest.raises(SubmitError) as excinfo:
        form_to_request(image_values(before, ""))
    assert fields_of(excinfo) == ["pairs"] and "both" in excinfo.value.errors[0][1]
    with pytest.raises(SubmitError) as excinfo:
        form_to_request(image_values("", ""))
    assert fields_of(excinfo) == ["pairs"]
    with pytest.raises(SubmitError) as excinfo:
        form_to_request(image_values(tmp_path / "missing", after))
    assert fields_of(excinfo) == ["pairs"]


# ---------------------------------------------------------------------------------------------- scales


def test_scales_parsing():
    assert train_form_parse.parse_scales("1, 2") == [1.0, 2.0]
    assert train_form_parse.parse_scales(" 1;2  3 ") == [1.0, 2.0, 3.0]
    assert train_form_parse.parse_scales([1, 2.5]) == [1.0, 2.5]
    with pytest.raises(SubmitError) as excinfo:
        train_form_parse.parse_scales("1, two")
    assert fields_of(excinfo) == ["scales"] and "'two'" in excinfo.value.errors[0][1]


def test_bad_scales_name_scales_for_image_sliders_only(tmp_path):
    before, after = make_folders(tmp_path)
    with pytest.raises(SubmitError) as excinfo:
        form_to_request(image_values(before, after, scales="1, x"))
    assert fields_of(excinfo) == ["scales"]
    with pytest.raises(SubmitError) as excinfo:
        form_to_request(image_values(before, after, scales=""))
    assert fields_of(excinfo) == ["scales"]
    with pytest.raises(SubmitError) as excinfo:
        form_to_request(image_values(before, after, scales="1, -2"))
    assert fields_of(excinfo) == ["scales[1]"]
    # The image fields are hidden for a text slider: a stray value there doesn't block it.
    assert form_to_request(text_values(scales="1, x"))[0]["scales"] == [1.0]


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("changes", "fields"), [
    ({"name": ""}, ["name"]),
    ({"name": "a/b"}, ["name"]),
    ({"positive": ""}, ["prompts[0].positive"]),
    ({"negative": "person, very old"}, ["prompts[0].negative"]),
    ({"action": "boost"}, ["prompts[0].action"]),
    ({"guidance": "much"}, ["prompts[0].guidance"]),
    ({"rank": "abc"}, ["rank"]),
    ({"rank": 0}, ["rank"]),
    ({"rank": 2.5}, ["rank"]),
    ({"iterations": None}, ["iterations"]),
    ({"resolution": 500}, ["resolution"]),
    ({"lr": -1}, ["lr"]),
    ({"lr": "fast"}, ["lr"]),
    ({"alpha_low": 3, "alpha_high": 1}, ["alpha_range"]),
    ({"default_start": 1.5}, ["default_start"]),
    ({"preset": "everything"}, ["preset"]),
    ({"precision": "fp8"}, ["precision"]),
    ({"mode": "Video slider"}, ["mode"]),
    ({"more_prompts": "[{"}, ["prompts"]),
    ({"more_prompts": '{"a": 1}'}, ["prompts"]),
    ({"more_prompts": '[{"target": "x", "positive": "", "negative": "y"}]'}, ["prompts[1].positive"]),
    ({"more_prompts": '[{"target": "x"}]'}, ["prompts[1].positive"]),
    ({"advanced": "{"}, ["advanced"]),
    ({"advanced": '{"rank": 4}'}, ["advanced"]),
    ({"advanced": '{"max_denoising_steps": 1}'}, ["max_denoising_steps"]),
    ({"advanced": '{"max_denoising_steps": "many"}'}, ["max_denoising_steps"]),
])
def test_bad_values_are_refused_by_field(changes, fields):
    with pytest.raises(SubmitError) as excinfo:
        form_to_request(text_values(**changes))
    assert fields_of(excinfo) == fields


def test_every_problem_is_listed_at_once():
    with pytest.raises(SubmitError) as excinfo:
        form_to_request(text_values(name="", positive="", rank="x", scales="bad"))
    assert fields_of(excinfo) == ["rank", "name", "prompts[0].positive"]


def test_error_lines_use_the_forms_labels():
    lines = train_messages.error_lines([("prompts[0].positive", "must not be empty"), ("alpha_range", "low"),
                                    ("prompts[2].target", "x"), ("max_denoising_steps", "y"), ("weird", "z")])
    assert lines == ["Positive prompt (prompts[0].positive): must not be empty",
                     "Recommended α range (alpha_range): low", "More prompts, entry 2 (prompts[2].target): x",
                     "Other settings (max_denoising_steps) (max_denoising_steps): y", "weird: z"]
    page = train_messages.errors_html([("name", "a slider named 'age' exists; choose another name or overwrite it")])
    assert "Overwrite" in page and "&#x27;age&#x27;" in page


# ---------------------------------------------------------------------------------------------- presets


def test_json_preset_round_trip_through_import_file(tmp_path):
    values = text_values(preservation="male\nfemale", rank=16, lr="1e-4", more_prompts='[{"positive": "old"}]',
                         advanced='{"checkpoint_every": 25}')
    path = tmp_path / "age.json"
    path.write_text(form_to_json(values), encoding="utf-8")
    config, notes = import_file(path)
    assert notes == []
    assert config == TrainConfig.from_dict(form_to_request(values)[0])
    assert config.rank == 16 and config.checkpoint_every == 25 and len(config.prompts) == 2
    form, form_notes = train_form_fill.import_preset(str(path))
    assert {k: v for k, v in form.items()} == config_to_form(config)
    assert any("More prompts" in note for note in form_notes)


def test_image_preset_round_trip(tmp_path):
    before, after = make_folders(tmp_path)
    values = image_values(before, after, scales="2")
    path = tmp_path / "light.json"
    path.write_text(form_to_json(values), encoding="utf-8")
    form, _ = train_form_fill.import_preset(str(path))
    assert (form["before_dir"], form["after_dir"], form["scales"]) == (str(before), str(after), "2")


def test_an_incomplete_form_can_still_be_saved():
    text = form_to_json(defaults())
    assert json.loads(text)["name"] == ""
    with pytest.raises(SubmitError) as excinfo:
        form_to_json(text_values(rank="x"))
    assert fields_of(excinfo) == ["rank"]


def test_official_prompts_yaml_fills_the_form(tmp_path):
    path = tmp_path / "age slider.yaml"
    path.write_text("- target: male person\n  positive: male person, old\n  unconditional: male person, young\n"
                    "  action: enhance\n  guidance_scale: 4\n"
                    "- target: female person\n  positive: female person, old\n  unconditional: female person, young\n"
                    "  action: enhance\n  guidance_scale: 4\n", encoding="utf-8")
    form, notes = train_form_fill.import_preset(str(path))
    assert form["name"] == "age slider" and form["target"] == "male person"
    assert json.loads(form["more_prompts"])[0]["target"] == "female person"
    assert any("2 prompts" in note for note in notes)
    config, _ = form_to_request({**defaults(), **form})
    assert len(config["prompts"]) == 2


# ---------------------------------------------------------------------------------------------- uploads


def test_uploads_are_copied_and_paired_by_stem(tmp_path):
    src = tmp_path / "src"
    before = [png(src / "a" / "01.png"), png(src / "a" / "02.png")]
    after = [types.SimpleNamespace(name=png(src / "b" / "tmp1" / "01.jpg", 50), orig_name="01.jpg"),
             {"name": png(src / "b" / "tmp2" / "02.webp", 60)}]
    sliders = tmp_path / "sliders"
    pairs = train_uploads.stage_uploads(str(sliders), "smile", before, after)
    root = sliders / ".training" / "uploads" / "smile"
    assert [(p.before, p.after) for p in pairs] == [
        (str(root / "before" / "01.png"), str(root / "after" / "01.jpg")),
        (str(root / "before" / "02.png"), str(root / "after" / "02.webp"))]
    # A second upload replaces each side as a whole.
    pairs = train_uploads.stage_uploads(str(sliders), "smile", before[:1], after[:1])
    assert len(pairs) == 1 and sorted(os.listdir(root / "before")) == ["01.png"]
    assert train_uploads.stage_uploads(str(sliders), "smile", None, []) == []


def test_upload_problems(tmp_path):
    good = png(tmp_path / "01.png")
    note = tmp_path / "notes.txt"
    note.write_text("x")
    cases = [([good], []), ([good], [str(note)]), ([good], [png(tmp_path / "02.png")]),
             ([good, png(tmp_path / "x" / "01.jpg")], [good])]
    for before, after in cases:
        with pytest.raises(SubmitError) as excinfo:
            train_uploads.stage_uploads(str(tmp_path / "s"), "n", before, after)
        assert fields_of(excinfo) == ["pairs"], (before, after)
    with pytest.raises(SubmitError) as excinfo:
        train_uploads.stage_uploads(str(tmp_path / "s"), "../x", [good], [good])
    assert fields_of(excinfo) == ["name"]


def test_build_request_stages_uploads_and_lists_all_problems(tmp_path):
    a, b = png(tmp_path / "a" / "01.png"), png(tmp_path / "b" / "01.png", 99)
    config, _ = train_form_parse.build_request(image_values("", ""), str(tmp_path / "s"), [a], [b])
    assert config["pairs"][0]["before"] == str(tmp_path / "s" / ".training" / "uploads" / "light" / "before" / "01.png")
    with pytest.raises(SubmitError) as excinfo:
        train_form_parse.build_request(image_values("", "", name="", rank=0), str(tmp_path / "s"), [a], [b])
    assert fields_of(excinfo) == ["name", "pairs", "rank"]
    # A text slider ignores uploads.
    assert train_form_parse.build_request(text_values(), str(tmp_path / "s"), [a], None)[0]["pairs"] == []


# ---------------------------------------------------------------------------------------------- jobs and results


def fake_jobs(folder) -> TrainingJobs:
    def prepare():
        from lib_sliders.errors import SliderError

        raise SliderError("no model is loaded: load a checkpoint first")

    return TrainingJobs(TrainingHost(sliders_dir=lambda: str(folder), prepare=prepare, restore=lambda: None))


def test_an_existing_slider_is_only_replaced_with_overwrite(tmp_path):
    (tmp_path / "age.safetensors").write_bytes(b"x")
    jobs = fake_jobs(tmp_path)
    with pytest.raises(SubmitError) as excinfo:
        jobs.create(*form_to_request(text_values()))
    assert fields_of(excinfo) == ["name"]
    assert "Overwrite" in train_messages.errors_html(excinfo.value.errors)
    job = jobs.create(*form_to_request(text_values(overwrite=True)))
    assert job.options.overwrite and job.config.name == "age"


def test_sliders_to_train_among_must_be_in_the_slider_list(tmp_path):
    values = text_values(train_among=["smile", "gone"])
    with pytest.raises(SubmitError) as excinfo:
        fake_jobs(tmp_path).create(*form_to_request(values))  # a host that can't load sliders
    assert excinfo.value.errors == [("train_among", "this host can't load sliders to train among")]
    jobs = TrainingJobs(TrainingHost(sliders_dir=lambda: str(tmp_path), prepare=lambda: None, restore=lambda: None,
                                     slider_names=lambda: ["smile", "age"], load_slider=lambda name: None))
    with pytest.raises(SubmitError) as excinfo:
        jobs.create(*form_to_request(values))
    assert fields_of(excinfo) == ["train_among[1]"] and "'gone'" in excinfo.value.errors[0][1]
    assert train_messages.error_lines(excinfo.value.errors)[0].startswith(
        "Train among these sliders (train_among[1]): no slider named 'gone'")
    assert jobs.create(*form_to_request(text_values(train_among=["smile"]))).config.train_among == ["smile"]


def test_job_html():
    job = TrainJob("1", TrainConfig(name="<age>"), TrainOptions(), state="done", iteration=10, total=10,
                   effect={"cosine": 0.01, "gain": 0.0, "cosine_negative": 0.0, "gain_negative": 0.0},
                   does_nothing=True, output="/x/<age>.safetensors", messages=["this slider does nothing"])
    page = train_messages.job_html(job)
    assert "does nothing measurable" in page and "&lt;age&gt;" in page and "<age>" not in page
    assert "cosine 0.01" in page and "/x/&lt;age&gt;.safetensors" in page
    job.does_nothing, job.effect["cosine"] = False, 0.9
    assert "does nothing measurable" not in train_messages.job_html(job)
    failed = TrainJob("2", TrainConfig(name="x"), TrainOptions(), state="failed", error="RuntimeError: boom")
    assert "failed" in train_messages.job_html(failed) and "RuntimeError: boom" in train_messages.job_html(failed)
    cancelled = TrainJob("3", TrainConfig(name="x"), TrainOptions(), state="cancelled", iteration=4, total=9)
    assert "Resume" in train_messages.job_html(cancelled)


# ---------------------------------------------------------------------------------------------- the tab (minimal)


@pytest.fixture
def stub_webui(monkeypatch):
    """``modules.call_queue``/``modules.shared`` stand-ins; ``train_tab`` is imported fresh and forgotten after."""
    state = types.SimpleNamespace(interrupted=False)
    state.interrupt = lambda: setattr(state, "interrupted", True)
    wrapped = []

    def wrap_gradio_gpu_call(fn, extra_outputs=None):
        wrapped.append(extra_outputs)
        return fn

    call_queue = types.SimpleNamespace(wrap_gradio_gpu_call=wrap_gradio_gpu_call)
    shared = types.SimpleNamespace(state=state)
    modules = types.ModuleType("modules")
    modules.call_queue, modules.shared = call_queue, shared
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "modules.call_queue", call_queue)
    monkeypatch.setitem(sys.modules, "modules.shared", shared)
    for name in ("ui_common", "ui_components"):  # the webui double's copies (the refresh button)
        spec = importlib.util.spec_from_file_location(f"modules.{name}", DOUBLE_MODULES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        setattr(modules, name, module)
        monkeypatch.setitem(sys.modules, f"modules.{name}", module)
    previous = sys.modules.pop("lib_sliders.webui.train_tab", None)
    from lib_sliders.webui import train_tab

    yield types.SimpleNamespace(module=train_tab, state=state, wrapped=wrapped)
    package = sys.modules["lib_sliders.webui"]
    sys.modules.pop("lib_sliders.webui.train_tab", None)
    if previous is not None:
        sys.modules["lib_sliders.webui.train_tab"] = previous
        package.train_tab = previous
    elif getattr(package, "train_tab", None) is train_tab:
        del package.train_tab


@pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning")
@pytest.mark.filterwarnings("ignore:You have unused kwarg parameters in ToolButton")  # tooltip: the webui's patch
def test_create_tab_builds_and_refuses_without_starting(tmp_path, stub_webui):
    import gradio as gr

    (tmp_path / "age.safetensors").write_bytes(b"x")
    jobs = fake_jobs(tmp_path)
    blocks = stub_webui.module.create_tab(jobs, lambda: types.SimpleNamespace(get=lambda name: None))
    assert isinstance(blocks, gr.Blocks)
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    assert {"sliders_train_name", "sliders_train_start", "sliders_train_cancel", "sliders_train_resume",
            "sliders_train_before_files", "sliders_train_after_files", "sliders_train_result",
            "sliders_train_preview_image", "sliders_train_progressbar", "sliders_train_preset_load"} <= ids
    assert {f"sliders_train_{name}" for name in FIELD_NAMES} <= ids
    named = [b.elem_id for b in blocks.blocks.values() if getattr(b, "elem_id", None)]
    assert len(named) == len(set(named)), "element ids must be unique (the JS finds elements by id)"
    assert [d.get("js") for d in blocks.dependencies].count("slidersStartTraining") == 2
    # After each run (not before it starts) the Extra Networks pages are rebuilt, for the new slider's card.
    refreshes = [d for d in blocks.dependencies if d.get("js") == "slidersRefreshCards"]
    assert len(refreshes) == 2
    assert all(blocks.dependencies[d["trigger_after"]].get("js") == "slidersStartTraining" for d in refreshes)
    assert len(stub_webui.wrapped) == 2

    tab = blocks.sliders_train_tab
    args = [text_values()[name] for name in FIELD_NAMES] + [None, None]
    preview, status, page = tab.start("task(1)", *args)
    assert status == "" and "did not start" in page and "exists" in page and jobs.jobs() == []
    args[FIELD_NAMES.index("overwrite")] = True
    preview, _, page = tab.start("task(2)", *args)
    assert preview is None and "no model is loaded" in page and jobs.jobs()[0].state == "failed"
    assert tab.cancel() == "<p>Nothing is training.</p>" and not stub_webui.state.interrupted
    assert "exists" in tab.name_hint("age") and tab.name_hint("new") == ""


@pytest.mark.filterwarnings("ignore:Please use `import python_multipart`:PendingDeprecationWarning")
@pytest.mark.filterwarnings("ignore:You have unused kwarg parameters in ToolButton")  # tooltip: the webui's patch
def test_a_loaded_preset_keeps_the_sliders_it_trains_among_even_those_not_installed(tmp_path, stub_webui):
    library = types.SimpleNamespace(names=lambda: ["smile", "age"], get=lambda name: None, refresh=lambda: None)
    blocks = stub_webui.module.create_tab(fake_jobs(tmp_path), lambda: library)
    tab = blocks.sliders_train_tab
    preset = tmp_path / "among.json"
    preset.write_text(form_to_json(text_values(name="hair", train_among=["smile", "gone"])), encoding="utf-8")
    updates = tab.load_preset(str(preset))
    among = updates[FIELD_NAMES.index("train_among")]
    assert among["value"] == ["smile", "gone"] and among["choices"] == ["smile", "age", "gone"]
    refreshed = tab.refresh_sliders(["age"])
    assert refreshed["value"] == ["age"] and refreshed["choices"] == ["smile", "age"]
