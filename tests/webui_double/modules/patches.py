"""``modules.patches``: swap a class attribute for a replacement under a key, and swap it back.

Semantics kept from the webui: a second patch of the same ``(owner, name)`` under one key, or undoing one that
isn't there, raises ``RuntimeError``; ``patch`` and ``undo`` return the original.
"""

from collections import defaultdict

originals = defaultdict(dict)  # key → {(owner, name): original}


def patch(key, obj, field, replacement):
    saved = originals[key]
    if (obj, field) in saved:
        raise RuntimeError(f"patch for {field} is already applied")
    saved[(obj, field)] = getattr(obj, field)
    setattr(obj, field, replacement)
    return saved[(obj, field)]


def undo(key, obj, field):
    saved = originals[key]
    if (obj, field) not in saved:
        raise RuntimeError(f"there is no patch for {field} to undo")
    original_value = saved.pop((obj, field))
    setattr(obj, field, original_value)
    return original_value


def original(key, obj, field):
    return originals[key].get((obj, field))
