"""``modules.sd_models``: the loaded models (``model_data``) and switching between them.

``shared.sd_model`` is a property over ``model_data`` (``get_sd_model``/``set_sd_model``), as in the webui.
``set_sd_model`` keeps the most recent model first in ``loaded_sd_models``.

Switching checkpoints: ``reload_model_weights(info=…)``. With the setting ``sd_checkpoints_limit`` > 1 the
webui keeps several models loaded and, when the wanted checkpoint is one of them, only makes it the current
model ("Using already loaded model …") — **without** ``on_model_loaded``. The double has that path
(``reuse_model_from_already_loaded``) and the no-op when the checkpoint is already current (``process_images``
reloads the settings' checkpoint at the start of a job and of every batch, so a model switched mid-batch, e.g. by
the refiner, is switched back for the next batch — by the same path, again without the callback); loading a
checkpoint from a file is left out (a test that needs a new model builds one and assigns ``shared.sd_model``,
then runs ``script_callbacks.model_loaded_callback`` itself, as ``load_model`` would).
"""

from __future__ import annotations

from modules import shared


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False

    def get_sd_model(self):
        return self.sd_model  # the webui loads one on first use; the double's tests assign it

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        try:
            self.loaded_sd_models.remove(v)
        except ValueError:
            pass
        if v is not None:
            self.loaded_sd_models.insert(0, v)
            self.was_loaded_at_least_once = True


model_data = SdModelData()


class SkipWritingToConfig:
    """Context manager: a checkpoint switch inside it isn't written to the settings (refiner, hires model)."""

    skip = False

    def __enter__(self):
        self.previous = SkipWritingToConfig.skip
        SkipWritingToConfig.skip = True
        return self

    def __exit__(self, exc_type, exc_value, exc_traceback):
        SkipWritingToConfig.skip = self.previous


def select_checkpoint():
    """The checkpoint the setting ``sd_model_checkpoint`` names (title, name or file), looked up among the loaded
    models (the double has no checkpoint list); the current model's when the setting names none of them."""
    wanted = shared.opts.sd_model_checkpoint
    for model in model_data.loaded_sd_models:
        info = model.sd_checkpoint_info
        if wanted in (info.title, info.name_for_extra, info.filename):
            return info
    return getattr(model_data.sd_model, "sd_checkpoint_info", None)


def send_model_to_cpu(m):
    pass  # the double's models live on the CPU


def send_model_to_device(m):
    pass


def reuse_model_from_already_loaded(sd_model, checkpoint_info, timer):
    """The webui's: the already loaded model for ``checkpoint_info`` becomes the current one, no callback."""
    if sd_model is not None and sd_model.sd_checkpoint_info.filename == checkpoint_info.filename:
        return sd_model
    if shared.opts.sd_checkpoints_keep_in_cpu:
        send_model_to_cpu(sd_model)
    already_loaded = None
    for i in reversed(range(len(model_data.loaded_sd_models))):
        loaded_model = model_data.loaded_sd_models[i]
        if loaded_model.sd_checkpoint_info.filename == checkpoint_info.filename:
            already_loaded = loaded_model
            continue
        if len(model_data.loaded_sd_models) > shared.opts.sd_checkpoints_limit > 0:
            del model_data.loaded_sd_models[i]  # the webui also sends it to the "meta" device
    if already_loaded is not None:
        send_model_to_device(already_loaded)
        model_data.set_sd_model(already_loaded, already_loaded=True)
        if not SkipWritingToConfig.skip:
            shared.opts.data["sd_model_checkpoint"] = already_loaded.sd_checkpoint_info.title
        print(f"Using already loaded model {already_loaded.sd_checkpoint_info.title}: done in 0.0s")
        return model_data.sd_model
    raise NotImplementedError(f"the double can't load {checkpoint_info.title} from a file: only switch to a model "
                              "that is already loaded (sd_checkpoints_limit > 1)")


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    checkpoint_info = info or select_checkpoint()
    if not sd_model:
        sd_model = model_data.sd_model
    if checkpoint_info is None:
        return sd_model  # no model with checkpoint info loaded (the webui would load the first checkpoint)
    if sd_model is not None and not forced_reload \
            and sd_model.sd_checkpoint_info.filename == checkpoint_info.filename:
        return sd_model
    sd_model = reuse_model_from_already_loaded(sd_model, checkpoint_info, None)
    if not forced_reload and sd_model is not None and sd_model.sd_checkpoint_info.filename == checkpoint_info.filename:
        return sd_model
    raise NotImplementedError("the double can't reload weights from a file")
