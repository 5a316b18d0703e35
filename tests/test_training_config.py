"""TrainConfig: validation names the field, normalisation, and the JSON round trip."""

import dataclasses
import json
import math

import pytest

from lib_sliders.errors import SliderError
from lib_sliders.prompt.presets import PRESETS
from lib_sliders.training import config as config_module
from lib_sliders.training.config import ImagePair, TextPrompt, TrainConfig
from lib_sliders.training.config_values import ConfigError
from lib_sliders.training.slider_names import name_problem, sanitize_name


def text_config(**changes) -> TrainConfig:
    prompts = [
        TextPrompt("male person", "male person, very old", "male person, very young"),
        TextPrompt("female person", "female person, very old", "female person, very young"),
    ]
    return dataclasses.replace(TrainConfig(name="age", prompts=prompts), **changes)


def image_config(**changes) -> TrainConfig:
    pairs = [ImagePair("low/1.png", "high/1.png"), ImagePair("low/2.png", "high/2.png")]
    return dataclasses.replace(TrainConfig(name="eyes", mode="image", pairs=pairs), **changes)


def edit_prompt(index: int, **changes):
    def edit(cfg: TrainConfig) -> None:
        for key, value in changes.items():
            setattr(cfg.prompts[index], key, value)
    return edit


def edit_pair(index: int, **changes):
    def edit(cfg: TrainConfig) -> None:
        for key, value in changes.items():
            setattr(cfg.pairs[index], key, value)
    return edit


def test_defaults_are_valid():
    text_config().validate()
    image_config().validate()
    assert text_config().validation_errors() == []


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "..\\evil"}, "name"),
        ({"name": ".hidden"}, "name"),
        ({"name": "age:v2"}, "name"),
        ({"name": "age."}, "name"),
        ({"name": "con"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 3}, "name"),
        ({"mode": "video"}, "mode"),
        ({"prompts": []}, "prompts"),
        ({"prompts": "person"}, "prompts"),
        ({"prompts": [{"target": "x"}]}, "prompts[0]"),
        (edit_prompt(0, positive=""), "prompts[0].positive"),
        (edit_prompt(1, negative="female person, very old"), "prompts[1].negative"),
        (edit_prompt(0, target=3), "prompts[0].target"),
        (edit_prompt(0, neutral=1), "prompts[0].neutral"),
        (edit_prompt(0, preservation="male"), "prompts[0].preservation"),
        (edit_prompt(1, action="amplify"), "prompts[1].action"),
        (edit_prompt(0, guidance=0.0), "prompts[0].guidance"),
        (edit_prompt(0, guidance=-4.0), "prompts[0].guidance"),
        (edit_prompt(0, guidance=math.nan), "prompts[0].guidance"),
        (edit_prompt(0, guidance=math.inf), "prompts[0].guidance"),
        (edit_prompt(0, guidance="4"), "prompts[0].guidance"),
        (edit_prompt(0, weight=0.0), "prompts[0].weight"),
        ({"rank": 0}, "rank"),
        ({"rank": 1025}, "rank"),
        ({"rank": 2.5}, "rank"),
        ({"rank": True}, "rank"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"preset": "attn"}, "preset"),
        ({"iterations": 0}, "iterations"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-4}, "lr"),
        ({"lr": "2e-4"}, "lr"),
        ({"weight_decay": -0.01}, "weight_decay"),
        ({"resolution": 500}, "resolution"),
        ({"resolution": 0}, "resolution"),
        ({"resolution": 8192}, "resolution"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": "1"}, "seed"),
        ({"precision": "int8"}, "precision"),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing"),
        ({"bidirectional": 1}, "bidirectional"),
        ({"max_denoising_steps": 1}, "max_denoising_steps"),
        ({"max_denoising_steps": 1001}, "max_denoising_steps"),
        ({"timesteps_per_trajectory": 0}, "timesteps_per_trajectory"),
        ({"timesteps_per_trajectory": 50}, "timesteps_per_trajectory"),
        ({"sampling_guidance": 0.5}, "sampling_guidance"),
        ({"alpha_range": (3.0, -3.0)}, "alpha_range"),
        ({"alpha_range": (1.0, 1.0)}, "alpha_range"),
        ({"alpha_range": (-math.inf, 3.0)}, "alpha_range"),
        ({"alpha_range": (1.0, 2.0, 3.0)}, "alpha_range"),
        ({"default_start": 1.0}, "default_start"),
        ({"default_start": -0.1}, "default_start"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"train_among": ["smile", ""]}, "train_among[1]"),
        ({"train_among": ["smile", "hair", "smile"]}, "train_among[2]"),
        ({"train_among": ["smile", "age"]}, "train_among[1]"),  # the slider itself
        ({"train_among": "smile"}, "train_among"),
        ({"train_among": ["smile"], "among_alphas": []}, "among_alphas"),
        ({"train_among": ["smile"], "among_alphas": [1.0, math.nan]}, "among_alphas"),
    ],
)
def test_each_text_problem_names_its_field(changes, field):
    if callable(changes):
        cfg = text_config()
        changes(cfg)
    else:
        cfg = text_config()
        for key, value in changes.items():
            setattr(cfg, key, value)  # after construction, so nothing is normalised away
    errors = cfg.validation_errors()
    assert [e.field for e in errors] == [field], errors
    with pytest.raises(ConfigError) as caught:
        cfg.validate()
    assert caught.value.field == field
    assert str(caught.value) == f"{field}: {caught.value.problem}"


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"pairs": []}, "pairs"),
        (edit_pair(0, before=""), "pairs[0].before"),
        (edit_pair(1, after=""), "pairs[1].after"),
        (edit_pair(1, after="low/2.png"), "pairs[1].after"),
        (edit_pair(0, before=None), "pairs[0].before"),
        ({"scales": []}, "scales"),
        ({"scales": [1.0, -2.0]}, "scales[1]"),
        ({"scales": [0.0]}, "scales[0]"),
        ({"scales": "1, 2"}, "scales"),
        ({"image_prompt": None}, "image_prompt"),
    ],
)
def test_each_image_problem_names_its_field(changes, field):
    cfg = image_config()
    if callable(changes):
        changes(cfg)
    else:
        for key, value in changes.items():
            setattr(cfg, key, value)
    assert [e.field for e in cfg.validation_errors()] == [field]


def test_mode_checks_only_its_own_inputs():
    text_config(pairs=[], scales=[]).validate()  # an image slider's inputs don't matter to a text slider
    image_config(prompts=[]).validate()


def test_messages_are_helpful():
    errors = {e.field: e.problem for e in text_config(preset="attn", lr=-1.0, name="a/b").validation_errors()}
    assert all(preset in errors["preset"] for preset in PRESETS)
    assert "2e-4" in errors["lr"] and "1e-5" in errors["lr"]
    assert "separator" in errors["name"]


def test_validation_errors_collects_every_problem_in_field_order():
    cfg = text_config(name="", rank=0, lr=-1.0, resolution=100)
    cfg.prompts[1].action = "boost"
    cfg.prompts[0].positive = ""
    fields = [e.field for e in cfg.validation_errors()]
    assert fields == ["name", "prompts[0].positive", "prompts[1].action", "rank", "lr", "resolution"]
    with pytest.raises(ConfigError) as caught:
        cfg.validate()
    assert caught.value.field == "name"


def test_config_error_is_a_slider_error():
    error = ConfigError("rank", "must be between 1 and 1024")
    assert isinstance(error, SliderError)
    assert (error.field, error.problem, str(error)) == ("rank", "must be between 1 and 1024", "rank: must be between 1 and 1024")


def test_empty_target_and_empty_negative_are_allowed():
    # The official "details" slider: target "" (affects everything); LECO-style entries: c- = "".
    cfg = text_config(prompts=[TextPrompt("", "high detail, intricate", "blurry, low detail")])
    cfg.validate()
    text_config(prompts=[TextPrompt("van gogh", "van gogh", "", action="erase")]).validate()


def test_construction_normalises_values():
    prompt = TextPrompt("  person ", " person, old\n", "person, young ", neutral="  ",
                        preservation=[" male", "", "  ", "female "], action=" Erase ", guidance=4, weight=2)
    assert (prompt.target, prompt.positive, prompt.negative) == ("person", "person, old", "person, young")
    assert prompt.neutral is None  # a blank neutral means "same as target"
    assert prompt.preservation == ["male", "female"]
    assert prompt.action == "erase"
    assert isinstance(prompt.guidance, float) and isinstance(prompt.weight, float)

    cfg = TrainConfig(name=" age slider ", rank=8.0, iterations=500.0, alpha=4, lr=1, alpha_range=[-5, 5],
                      pairs=[ImagePair(" a.png ", "b.png\t")])
    assert cfg.name == "age slider"
    assert cfg.rank == 8 and type(cfg.rank) is int and type(cfg.iterations) is int
    assert cfg.alpha == 4.0 and cfg.lr == 1.0
    assert cfg.alpha_range == (-5.0, 5.0)
    assert (cfg.pairs[0].before, cfg.pairs[0].after) == ("a.png", "b.png")


def test_learning_rate_defaults_per_mode():
    assert text_config().learning_rate == 2e-4
    assert image_config().learning_rate == 1e-5
    assert text_config(lr=5e-5).learning_rate == 5e-5
    assert image_config(lr=2e-4).learning_rate == 2e-4


def test_to_dict_is_json_safe_and_round_trips():
    cfg = text_config(alpha_range=(-5.0, 5.0), default_start=0.2, lr=1e-4, checkpoint_every=250)
    cfg.prompts[0].preservation = ["white", "black"]
    cfg.prompts[1].neutral = "female"
    data = cfg.to_dict()
    assert data["alpha_range"] == [-5.0, 5.0]
    assert data["prompts"][0]["preservation"] == ["white", "black"]
    restored = TrainConfig.from_dict(json.loads(json.dumps(data)))
    assert restored == cfg
    images = image_config(scales=[1.0, 3.0], image_prompt="eyes")
    assert TrainConfig.from_dict(json.loads(json.dumps(images.to_dict()))) == images


def test_from_dict_fills_defaults():
    assert TrainConfig.from_dict({"name": "age"}) == TrainConfig(name="age")
    cfg = TrainConfig.from_dict({"name": "age", "lr": None, "prompts": [{"target": "p", "positive": "p, old",
                                                                          "negative": "p, young"}]})
    assert cfg.lr is None and cfg.prompts == [TextPrompt("p", "p, old", "p, young")]


@pytest.mark.parametrize(
    "data, field, problem",
    [
        ({"name": "age", "foo": 1}, "foo", "unknown field 'foo'"),
        ({"name": "age", "prompts": [{"target": "p", "positive": "a", "negative": "b", "unconditional": "b"}]},
         "prompts[0].unconditional", "unknown field 'unconditional'"),
        ({"name": "age", "pairs": [{"before": "a", "after": "b", "scale": 1}]}, "pairs[0].scale", "unknown field 'scale'"),
        ({"name": "age", "rank": "4"}, "rank", "expected an integer"),
        ({"name": "age", "rank": 4.5}, "rank", "expected an integer"),
        ({"name": "age", "rank": True}, "rank", "expected an integer"),
        ({"name": "age", "alpha": "1"}, "alpha", "expected a number"),
        ({"name": "age", "lr": "fast"}, "lr", "expected a number or null"),
        ({"name": "age", "bidirectional": "true"}, "bidirectional", "expected true or false"),
        ({"name": "age", "scales": [1, "2"]}, "scales", "expected a list of numbers"),
        ({"name": "age", "alpha_range": [1]}, "alpha_range", "expected a pair of numbers [low, high]"),
        ({"name": 5}, "name", "expected a string"),
        ({"name": "age", "prompts": {"target": "p"}}, "prompts", "expected a list"),
        ({"name": "age", "prompts": ["p"]}, "prompts[0]", "expected an object"),
        ({"name": "age", "prompts": [{"target": "p", "positive": "a", "negative": "b", "preservation": "m"}]},
         "prompts[0].preservation", "expected a list of strings"),
        ({"name": "age", "prompts": [{"target": "p", "negative": "b"}]}, "prompts[0].positive", "required"),
        ({"name": "age", "pairs": [{"before": "a"}]}, "pairs[0].after", "required"),
        ({"rank": 4}, "name", "required"),
        (["age"], "config", "expected an object"),
    ],
)
def test_from_dict_rejects_unknown_fields_and_wrong_types(data, field, problem):
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict(data)
    assert (caught.value.field, caught.value.problem) == (field, problem)


def test_from_dict_accepts_integral_floats_for_integers():
    cfg = TrainConfig.from_dict({"name": "age", "rank": 8.0, "resolution": 768.0})
    assert (cfg.rank, cfg.resolution) == (8, 768)


def test_kind_tables_cover_every_field():
    nested = {"prompts", "pairs"}
    assert set(config_module._CONFIG_KINDS) | nested == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(config_module._PROMPT_KINDS) == {f.name for f in dataclasses.fields(TextPrompt)}
    assert set(config_module._PAIR_KINDS) == {f.name for f in dataclasses.fields(ImagePair)}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("prompts-smile_slider_GPT", "prompts-smile_slider_GPT"),
        ("age (v2).final", "age (v2).final"),
        ("a/b:c*d", "a_b_c_d"),
        ("..hidden", "hidden"),
        ("", "slider"),
        ("...", "slider"),
        ("con", "con_"),
        ("年齢", "年齢"),
    ],
)
def test_sanitize_name(text, expected):
    assert sanitize_name(text) == expected
    assert name_problem(sanitize_name(text)) is None
