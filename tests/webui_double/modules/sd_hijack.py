"""Double of ``modules/sd_hijack.py``'s optimisation switches; counts calls so tests can check pairing."""

calls: list[str] = []


def undo_optimizations():
    calls.append("undo")


def apply_optimizations(option=None):
    calls.append("apply")
    return "double"
