"""Importing the official Concept Sliders YAMLs, ai-toolkit slider jobs and our own JSON."""

import json

import pytest
import yaml

from lib_sliders.errors import SliderError
from lib_sliders.training.config import TextPrompt, TrainConfig
from lib_sliders.training.config_values import ConfigError
from lib_sliders.training.importers.ai_toolkit import from_ai_toolkit
from lib_sliders.training.importers.config_file import import_file, load_yaml
from lib_sliders.training.importers.official import from_official

# The age slider as shipped in trainscripts/textsliders/data/prompts.yaml (comments included).
AGE_PROMPTS_YAML = """\
####################################################################################################### AGE SLIDER
- target: "male person" # what word for erasing the positive concept from
  positive: "male person, very old" # concept to erase
  unconditional: "male person, very young" # word to take the difference from the positive concept
  neutral: "male person" # starting point for conditioning the target
  action: "enhance" # erase or enhance
  guidance_scale: 4
  resolution: 512
  dynamic_resolution: false
  batch_size: 1
- target: "female person" # what word for erasing the positive concept from
  positive: "female person, very old" # concept to erase
  unconditional: "female person, very young" # word to take the difference from the positive concept
  neutral: "female person" # starting point for conditioning the target
  action: "enhance" # erase or enhance
  guidance_scale: 4
  resolution: 512
  dynamic_resolution: false
  batch_size: 1
####################################################################################################### MUSCULAR SLIDER
# - target: "male person" # what word for erasing the positive concept from
#   positive: "male person, muscular, strong, biceps, greek god physique, body builder" # concept to erase
"""

# The official GPT helper's output (prompts-smile_slider_GPT.yaml): `guidance` and `rank`, not `guidance_scale`.
GPT_PROMPTS_YAML = """\
- target: male white person
  positive: male white person, smiling, happy face, big smile
  unconditional: male white person, frowning, grumpy, sad
  neutral: male white person
  guidance: 4
  rank: 4
  action: enhance
  resolution: 512
  dynamic_resolution: false
  batch_size: 1
- target: female white person
  positive: female white person, smiling, happy face, big smile
  unconditional: female white person, frowning, grumpy, sad
  neutral: female white person
  guidance: 4
  rank: 4
  action: enhance
  resolution: 512
  dynamic_resolution: false
  batch_size: 1
"""

# trainscripts/textsliders/data/config.yaml as shipped.
OFFICIAL_CONFIG_YAML = """\
prompts_file: "trainscripts/textsliders/data/prompts.yaml"
pretrained_model:
  name_or_path: "CompVis/stable-diffusion-v1-4" # you can also use .ckpt or .safetensors models
  v2: false # true if model is v2.x
  v_pred: false # true if model uses v-prediction
network:
  type: "c3lier" # or "c3lier" or "lierla"
  rank: 4
  alpha: 1.0
  training_method: "noxattn"
train:
  precision: "bfloat16"
  noise_scheduler: "ddim" # or "ddpm", "lms", "euler_a"
  iterations: 1000
  lr: 0.0002
  optimizer: "AdamW"
  lr_scheduler: "constant"
  max_denoising_steps: 50
save:
  name: "temp"
  path: "./models"
  per_steps: 500
  precision: "bfloat16"
logging:
  use_wandb: false
  verbose: false
other:
  use_xformers: true
"""

# Shaped like ai-toolkit's config/examples/train_slider.example.yml (anchors enabled here).
AI_TOOLKIT_YAML = """\
---
job: train
config:
  name: detail_slider_v1
  training_folder: "output/LoRA"
  device: cuda:0
  process:
    - type: slider
      network:
        type: "lierla"
        linear: 8
        linear_alpha: 4
      train:
        noise_scheduler: "ddpm"
        steps: 500
        lr: 2e-4
        gradient_checkpointing: true
        train_unet: true
        train_text_encoder: false
        min_snr_gamma: 5.0
        optimizer: "adamw"
        lr_scheduler: "constant"
        max_denoising_steps: 40
        batch_size: 1
        dtype: bf16
        noise_offset: 0.0
      model:
        name_or_path: "runwayml/stable-diffusion-v1-5"
        is_v2: false
        is_v_pred: false
        is_xl: false
      save:
        dtype: float16
        save_every: 50
        max_step_saves_to_keep: 2
      sample:
        sampler: "ddpm"
        sample_every: 20
        width: 512
        height: 512
        prompts:
          - "a woman in a coffee shop, black hat, blonde hair, blue jacket --m -5"
          - "a woman in a coffee shop, black hat, blonde hair, blue jacket --m -3"
          - "a woman in a coffee shop, black hat, blonde hair, blue jacket --m 3"
          - "a woman in a coffee shop, black hat, blonde hair, blue jacket --m 5"
        neg: "cartoon, fake, drawing, illustration, cgi, animated, anime, monochrome"
        seed: 42
        guidance_scale: 7
        sample_steps: 20
        network_multiplier: 1.0
      logging:
        log_every: 10
      slider:
        resolutions:
          - [ 512, 512 ]
        batch_full_slide: true
        targets:
          - target_class: ""
            positive: "high detail, 8k, intricate, detailed, high resolution, high res, high quality"
            negative: "blurry, boring, fuzzy, low detail, low resolution, low res, low quality"
            weight: 1.0
            shuffle: true
        anchors:
          - prompt: "a woman"
            neg_prompt: "animal"
            multiplier: 1.0
meta:
  name: "[name]"
"""


def write(tmp_path, filename: str, text: str):
    path = tmp_path / filename
    path.write_text(text, encoding="utf-8")
    return path


def any_note(notes, *words) -> bool:
    return any(all(word in note for word in words) for note in notes)


# --- official ---------------------------------------------------------------------------------------


def test_shipped_age_slider_imports_exactly(tmp_path):
    cfg, notes = import_file(write(tmp_path, "prompts.yaml", AGE_PROMPTS_YAML))
    assert notes == []
    assert cfg.name == "prompts" and cfg.mode == "text"
    assert cfg.prompts == [
        TextPrompt("male person", "male person, very old", "male person, very young", guidance=4.0),
        TextPrompt("female person", "female person, very old", "female person, very young", guidance=4.0),
    ]
    assert cfg.prompts[0].neutral is None  # neutral == target
    assert (cfg.resolution, cfg.batch_size) == (512, 1)
    cfg.validate()


def test_gpt_guidance_key_is_honoured_and_rank_ignored():
    cfg, notes = from_official(yaml.safe_load(GPT_PROMPTS_YAML), name="smile")
    assert [p.guidance for p in cfg.prompts] == [4.0, 4.0]  # the official trainer would use 1.0
    assert any_note(notes, "all prompts", "guidance: 4")
    assert not any_note(notes, "rank")
    assert len(notes) == 1  # one merged line for both entries


def test_guidance_scale_wins_over_gpt_guidance():
    cfg, notes = from_official([{"target": "p", "positive": "p, a", "unconditional": "p, b", "action": "enhance",
                                 "guidance_scale": 2, "guidance": 4}], name="x")
    assert cfg.prompts[0].guidance == 2.0
    assert any_note(notes, "guidance_scale 2")


def test_official_entry_defaults():
    # positive = target, unconditional = "", neutral = unconditional, action erase, guidance_scale 1
    cfg, notes = from_official([{"target": "van gogh"}], name="x")
    prompt = cfg.prompts[0]
    assert (prompt.target, prompt.positive, prompt.negative, prompt.neutral) == ("van gogh", "van gogh", "", None)
    assert (prompt.action, prompt.guidance) == ("erase", 1.0)
    assert any_note(notes, "erase") and any_note(notes, "guidance_scale", "1")
    assert any_note(notes, "empty neutral")

    cfg, _ = from_official([{"target": "p", "unconditional": "p, young", "action": "enhance", "guidance_scale": 4}],
                           name="x")
    assert cfg.prompts[0].neutral == "p, young"  # neutral defaults to unconditional, not to target


def test_attributes_become_preservation_not_prefixes():
    prompts = yaml.safe_load(AGE_PROMPTS_YAML)
    cfg, notes = from_official(prompts, name="age", attributes=["white", "black", " "])
    assert [p.preservation for p in cfg.prompts] == [["white", "black"], ["white", "black"]]
    assert cfg.prompts[0].target == "male person"  # not "white male person"
    assert any_note(notes, "preservation")
    cfg, _ = from_official(prompts, name="age", attributes="male, female")  # the CLI's string form
    assert cfg.prompts[1].preservation == ["male", "female"]


def test_negative_guidance_flips_the_action():
    cfg, notes = from_official([{"target": "woman", "positive": "woman, baby", "unconditional": "woman, old",
                                 "action": "enhance", "guidance_scale": -4}], name="x")
    assert (cfg.prompts[0].action, cfg.prompts[0].guidance) == ("erase", 4.0)
    assert any_note(notes, "erase")


def test_mixed_resolutions_and_unsupported_keys_are_noted():
    entries = yaml.safe_load(AGE_PROMPTS_YAML)
    entries[1].update(resolution=768, dynamic_resolution=True, batch_size=2, foo=1)
    cfg, notes = from_official(entries, name="age")
    assert (cfg.resolution, cfg.batch_size) == (512, 1)
    assert any_note(notes, "512, 768") and any_note(notes, "batch sizes")
    assert any_note(notes, "prompts[1]", "dynamic_resolution")
    assert any_note(notes, "prompts[1]", "foo")


def test_kohya_style_mapping_with_prompts_and_weight():
    cfg, _ = from_official({"prompts": [{"target": "p", "positive": "p, a", "unconditional": "p, b",
                                         "action": "enhance", "guidance_scale": 4, "weight": 0.5}]}, name="x")
    assert cfg.prompts[0].weight == 0.5


def test_shipped_config_yaml_maps_onto_our_fields():
    cfg, notes = from_official(yaml.safe_load(AGE_PROMPTS_YAML), yaml.safe_load(OFFICIAL_CONFIG_YAML), name="age")
    assert (cfg.rank, cfg.alpha, cfg.preset) == (4, 1.0, "noxattn")
    assert (cfg.iterations, cfg.lr, cfg.max_denoising_steps, cfg.precision) == (1000, 2e-4, 50, "bf16")
    assert notes == [notes[0]] and "pretrained_model" in notes[0]  # the only thing not carried over
    cfg.validate()


@pytest.mark.parametrize(
    "network, preset, noted",
    [
        ({"type": "c3lier", "training_method": "noxattn"}, "noxattn", False),
        ({"type": "c3lier", "training_method": "full"}, "full", False),
        ({"type": "c3lier", "training_method": "xattn-strict"}, "xattn-strict", False),
        ({"type": "lierla", "training_method": "noxattn"}, "selfattn", False),
        ({"type": "lierla", "training_method": "innoxattn"}, "selfattn", False),
        ({"type": "lierla", "training_method": "xattn"}, "xattn", False),
        ({"type": "lierla", "training_method": "full"}, "full", True),
        ({"type": "c3lier", "training_method": "noxattn-hspace"}, "noxattn", True),
        ({"type": "loha", "training_method": "selfattn"}, "selfattn", True),
    ],
)
def test_network_type_and_method_map_to_a_preset(network, preset, noted):
    config = {"network": network, "train": {"iterations": 1000, "lr": 2e-4}}
    entry = {"target": "p", "positive": "p, a", "unconditional": "p, b", "neutral": "p", "action": "enhance",
             "guidance_scale": 4}
    cfg, notes = from_official([entry], config, name="x")
    assert cfg.preset == preset
    assert bool(notes) == noted


def test_config_yaml_uses_official_class_defaults_and_precisions():
    entry = [{"target": "p", "positive": "p, a", "action": "enhance", "guidance_scale": 4}]
    cfg, notes = from_official(entry, {"train": {"precision": "float16"}}, name="x")
    assert (cfg.preset, cfg.iterations, cfg.lr, cfg.precision) == ("full", 500, 1e-4, "fp16")
    assert any_note(notes, "official defaults")
    cfg, _ = from_official(entry, {"train": {"precision": "float32"}}, name="x")
    assert cfg.precision == "fp32"
    cfg, notes = from_official(entry, {"network": {"rank": 8, "alpha": 0}, "train": {"optimizer": "lion"}}, name="x")
    assert (cfg.rank, cfg.alpha) == (8, 8.0)
    assert any_note(notes, "lion")
    cfg, _ = from_official(entry, name="x")  # no config.yaml: our defaults (= the shipped config.yaml)
    assert (cfg.preset, cfg.iterations, cfg.lr, cfg.precision) == ("noxattn", 1000, None, "auto")


@pytest.mark.parametrize(
    "prompts, field",
    [
        ([], "prompts"),
        ({"target": "p"}, "prompts"),
        (["p"], "prompts[0]"),
        ([{"positive": "p, a"}], "prompts[0].target"),
        ([{"target": "p", "guidance_scale": "strong"}], "prompts[0].guidance_scale"),
        ([{"target": "p", "resolution": 512.5}], "prompts[0].resolution"),
        ([{"target": "p", "dynamic_resolution": "no"}], "prompts[0].dynamic_resolution"),
        ([{"target": ["p"]}], "prompts[0].target"),
    ],
)
def test_unreadable_official_prompts_name_the_entry(prompts, field):
    with pytest.raises(ConfigError) as caught:
        from_official(prompts, name="x")
    assert caught.value.field == field


# --- ai-toolkit -------------------------------------------------------------------------------------


def test_ai_toolkit_slider_example_imports(tmp_path):
    cfg, notes = import_file(write(tmp_path, "train_slider.yml", AI_TOOLKIT_YAML))
    assert cfg.name == "detail_slider_v1"
    assert (cfg.rank, cfg.alpha, cfg.preset) == (8, 4.0, "full")
    assert (cfg.iterations, cfg.lr, cfg.max_denoising_steps) == (500, 2e-4, 40)  # `2e-4` is a YAML string
    assert (cfg.precision, cfg.gradient_checkpointing, cfg.bidirectional) == ("bf16", True, True)
    assert (cfg.resolution, cfg.batch_size, cfg.alpha_range) == (512, 1, (-5.0, 5.0))
    assert cfg.prompts == [TextPrompt(
        "", "high detail, 8k, intricate, detailed, high resolution, high res, high quality",
        "blurry, boring, fuzzy, low detail, low resolution, low res, low quality", guidance=1.0)]
    for words in [("anchor",), ("shuffle",), ("min_snr_gamma",), ("guidance", "1"), ("full",), ("runwayml",)]:
        assert any_note(notes, *words), words
    cfg.validate()  # an empty target_class is fine: the detail slider affects everything


def test_ai_toolkit_targets_resolutions_and_defaults():
    job = {"config": {"name": "smile/v1", "process": [
        {"type": "sd_trainer"},
        {"type": "slider", "network": {"rank": 16}, "train": {"steps": 300},
         "slider": {"resolutions": [[768, 512], [512, 512]], "targets": [
             {"target_class": "person", "positive": "person, smiling", "negative": "person, frowning",
              "weight": 0.5, "multiplier": 2.0},
             {"target_class": "person", "positive": "person, laughing", "negative": "person, crying"}]}},
    ]}}
    cfg, notes = from_ai_toolkit(job)
    assert cfg.name == "smile_v1"
    assert (cfg.rank, cfg.alpha, cfg.iterations, cfg.lr) == (16, 1.0, 300, 1e-6)
    assert cfg.resolution == 768
    assert [p.weight for p in cfg.prompts] == [0.5, 1.0]
    assert all(p.neutral is None for p in cfg.prompts)
    for words in [("config.process[1]",), ("1e-6",), ("768×512",), ("2 resolutions",), ("targets[0]", "multiplier"),
                  ("empty prompt",)]:
        assert any_note(notes, *words), words
    assert from_ai_toolkit(job, name="mine")[0].name == "mine"


def test_ai_toolkit_concept_slider_extension():
    job = {"config": {"name": "age", "process": [{
        "type": "concept_slider", "network": {"type": "lora", "linear": 4, "linear_alpha": 2},
        "train": {"steps": 1000, "lr": 1e-4, "dtype": "bfloat16"},
        "datasets": [{"folder_path": "/data/people", "resolution": [512, 768]}],
        "slider": {"target_class": "person", "positive_prompt": "person, old", "negative_prompt": "person, young",
                   "anchor_class": "animal"},
    }]}}
    cfg, notes = from_ai_toolkit(job)
    assert cfg.prompts == [TextPrompt("person", "person, old", "person, young", guidance=3.0)]
    assert (cfg.rank, cfg.alpha, cfg.resolution, cfg.precision) == (4, 2.0, 512, "bf16")
    assert any_note(notes, "anchor_class") and any_note(notes, "datasets")


@pytest.mark.parametrize(
    "job, field",
    [
        ({"config": {"process": [{"type": "sd_trainer"}]}}, "config.process"),
        ({"config": {"process": "slider"}}, "config.process"),
        ({"config": {"process": [{"slider": {"targets": []}}]}}, "config.process[0].slider.targets"),
        ({"config": {"process": [{"slider": {"targets": ["a"]}}]}}, "config.process[0].slider.targets[0]"),
        ({"config": {"process": [{"train": {"steps": "many"}, "slider": {"targets": [{"positive": "a"}]}}]}},
         "config.process[0].train.steps"),
    ],
)
def test_unreadable_ai_toolkit_jobs_name_the_key(job, field):
    with pytest.raises(ConfigError) as caught:
        from_ai_toolkit(job)
    assert caught.value.field == field


# --- files ------------------------------------------------------------------------------------------


def test_own_json_round_trips(tmp_path):
    cfg = TrainConfig(name="age", prompts=[TextPrompt("p", "p, old", "p, young", preservation=["male"])],
                      alpha_range=(-5.0, 5.0), lr=1e-4)
    path = write(tmp_path, "age.json", json.dumps(cfg.to_dict()))
    assert import_file(path) == (cfg, [])


def test_own_json_errors_name_file_and_field(tmp_path):
    path = write(tmp_path, "bad.json", json.dumps({"name": "age", "rank": "4"}))
    with pytest.raises(SliderError, match=r"bad\.json: rank: expected an integer"):
        import_file(path)


def test_mapping_with_prompts_is_official(tmp_path):
    text = "prompts:\n" + "".join("  " + line + "\n" for line in AGE_PROMPTS_YAML.splitlines())
    cfg, _ = import_file(write(tmp_path, "age slider.yaml", text))
    assert cfg.name == "age slider" and len(cfg.prompts) == 2 and cfg.prompts[0].negative == "male person, very young"


def test_name_from_an_unsafe_file_stem(tmp_path):
    cfg, _ = import_file(write(tmp_path, ".age:v2.yaml", AGE_PROMPTS_YAML))
    assert cfg.name == "age_v2"
    cfg.validate()


def test_bad_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "broken.yaml", "- target: male person\n  positive: [unclosed\n")
    with pytest.raises(SliderError, match=r"broken\.yaml: not valid YAML at line \d+, column \d+"):
        load_yaml(path)
    with pytest.raises(SliderError, match=r"broken\.yaml"):
        import_file(path)


def test_bad_json_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(SliderError, match=r"bad\.json: not valid JSON at line 1"):
        import_file(write(tmp_path, "bad.json", "{name: 1}"))
    with pytest.raises(SliderError, match=r"missing\.yaml: cannot read"):
        import_file(tmp_path / "missing.yaml")
    with pytest.raises(SliderError, match=r"empty\.yaml: the file is empty"):
        import_file(write(tmp_path, "empty.yaml", "# nothing\n"))
    with pytest.raises(SliderError, match=r"other\.yaml: not a slider config"):
        import_file(write(tmp_path, "other.yaml", "foo: 1\n"))
    with pytest.raises(SliderError, match=r"binary\.yaml: not a UTF-8"):
        (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00bad")
        import_file(tmp_path / "binary.yaml")


def test_errors_inside_a_file_name_file_and_entry(tmp_path):
    path = write(tmp_path, "prompts.yaml", "- target: p\n  guidance_scale: strong\n")
    with pytest.raises(SliderError, match=r"prompts\.yaml: prompts\[0\]\.guidance_scale: expected a number"):
        import_file(path)
