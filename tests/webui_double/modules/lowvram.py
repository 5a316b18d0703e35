"""Double of ``modules/lowvram.py``: a model is split across devices when its ``lowvram`` flag is set."""


def is_enabled(sd_model):
    return bool(getattr(sd_model, "lowvram", False))
