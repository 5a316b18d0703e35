"""The real CLIP tokenizer (SD1's), built offline from the BPE file that ships in ``open_clip_torch``.

``open_clip`` itself is never imported (it needs torchvision); its package folder is located with
``importlib.util.find_spec`` and only ``bpe_simple_vocab_16e6.txt.gz`` is read. The construction is
openai ``SimpleTokenizer``'s: vocab = the 256 byte characters, the same with ``</w>``, every merge
joined, then ``<|startoftext|>`` and ``<|endoftext|>`` (49408 ids). The files a hub checkout of
``openai/clip-vit-large-patch14`` holds for its tokenizer are written once into a folder, which
``CLIPTokenizer.from_pretrained`` then loads (with transformers 5, never pass ``vocab_file=``: it
silently builds a 3-token vocab).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path

VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed (pip install --no-deps open_clip_torch)")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def write_tokenizer_files(directory: Path) -> None:
    lines = gzip.open(bpe_path(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [BOS, EOS]
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    (tmp / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
                                    encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                    encoding="utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "do_lower_case": True, "bos_token": BOS, "eos_token": EOS, "unk_token": EOS,
        "pad_token": EOS, "tokenizer_class": "CLIPTokenizer"}), encoding="utf-8")
    (tmp / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}), encoding="utf-8")
    for name in FILES:  # rename: concurrent builders never see half-written files
        os.replace(tmp / name, directory / name)
    tmp.rmdir()


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "sd-webui-concept-sliders" / "clip-tokenizer"


def build_clip_tokenizer(cache_dir: str | os.PathLike | None = None):
    """``CLIPTokenizer`` with SD1's real vocabulary; files written into ``cache_dir`` once (idempotent).

    Default folder: ``<system temp>/sd-webui-concept-sliders/clip-tokenizer``. One tokenizer object per
    folder and process is shared (loading the 49408-token vocabulary takes about a second)."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _load(str(directory.resolve()))


@functools.cache
def _load(directory: str):
    from transformers import CLIPTokenizer

    if not all((Path(directory) / name).is_file() for name in FILES):
        write_tokenizer_files(Path(directory))
    return CLIPTokenizer.from_pretrained(directory)
