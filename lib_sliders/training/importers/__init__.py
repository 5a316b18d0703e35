"""Import other trainers' slider configs into a ``TrainConfig``.

Sources: the official Concept Sliders ``prompts.yaml`` (+ optional ``config.yaml``; LECO uses the same
format), ai-toolkit slider jobs (``type: slider`` and the newer ``concept_slider`` extension), and this
extension's own JSON (``TrainConfig.to_dict``). Each importer takes already-parsed data and returns
``(config, notes)``: the notes say, one line each, what could not be carried over or was changed on
purpose. Importers raise for data they cannot read (wrong structure or type, naming the key path) but
do not ``validate()`` the result: the UI shows it for editing, and validation runs before training.

Missing keys take the *source trainer's* default where that changes the slider (the official entry
default ``action: erase``, ``guidance_scale: 1``; ai-toolkit's fixed guidance 1), each with a note;
precision and gradient checkpointing are hardware choices and only follow explicit settings.

Modules: ``official`` (the official format), ``ai_toolkit``, ``config_file`` (``import_file``: reads a file and
detects its format, our own JSON included) and ``foreign_values`` (reading other trainers' values, with errors
naming the key path, and the notes).
"""
