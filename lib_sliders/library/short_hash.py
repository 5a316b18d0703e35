"""The short hash A1111's Lora page shows for a slider file (``SliderLibrary.short_hash`` caches it per file)."""

from __future__ import annotations

import hashlib

from ..errors import SliderFileError
from .headers import read_safetensors_metadata

_CHUNK = 1024 * 1024
_HASH_LENGTH = 12


def _is_safetensors(path: str) -> bool:
    return path.lower().endswith(".safetensors")


def compute_short_hash(path: str) -> str:
    """What A1111's Lora page shows: ``sshs_model_hash`` or the AddNet hash (sha256 of the bytes after the
    safetensors header; of the whole file for pickles), first 12 hex digits."""
    if _is_safetensors(path):
        model_hash = read_safetensors_metadata(path).get("sshs_model_hash", "").strip().lower()
        if len(model_hash) >= _HASH_LENGTH and all(c in "0123456789abcdef" for c in model_hash):
            return model_hash[:_HASH_LENGTH]
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            if _is_safetensors(path):
                file.seek(8 + int.from_bytes(file.read(8), "little"))
            for chunk in iter(lambda: file.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as error:
        raise SliderFileError(path, f"cannot read: {error.strerror or error}") from None
    return digest.hexdigest()[:_HASH_LENGTH]
