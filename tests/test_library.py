"""The slider library: scanning (nested, duplicates, hidden/tmp, Lora folders), header-only scans, names that
never become paths, aliases, the load and hash caches, damaged files, and thread safety."""

from __future__ import annotations

import hashlib
import logging
import os
import threading

import pytest
import safetensors
import safetensors.torch
import torch

from lib_sliders.errors import SliderError, SliderFileError
from lib_sliders.files import slider_file
from lib_sliders.files.lora import LoraModule, SliderNetwork
from lib_sliders.files.slider_file import save_slider
from lib_sliders.library import slider_library as library_module
from lib_sliders.library.headers import read_safetensors_metadata
from lib_sliders.library.slider_library import SliderLibrary

LAYER = "input_blocks.1.1.transformer_blocks.0.attn1.to_q"
KOHYA_KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def tiny_network(seed: int = 0) -> SliderNetwork:
    g = torch.Generator().manual_seed(seed)
    module = LoraModule(down=torch.randn(2, 8, generator=g), up=torch.randn(8, 2, generator=g), alpha=1.0)
    return SliderNetwork(name="tiny", unet={LAYER: module})


def make_slider(path, seed: int = 0, title: str | None = None, **kwargs) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_slider(tiny_network(seed), path, arch="sd1", dtype=torch.float32, title=title or path.stem,
                overwrite=True, **kwargs)
    return str(path)


def make_plain_lora(path, metadata: dict[str, str] | None = None) -> str:
    """A LoRA some other trainer wrote: kohya keys, no sliders.* metadata, no hashes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{KOHYA_KEY}.lora_down.weight": torch.randn(2, 8), f"{KOHYA_KEY}.lora_up.weight": torch.randn(8, 2),
               f"{KOHYA_KEY}.alpha": torch.tensor(1.0)}
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return str(path)


def make_official_pt(path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"{KOHYA_KEY}.lora_down.weight": torch.randn(2, 8), f"{KOHYA_KEY}.lora_up.weight": torch.randn(8, 2),
                f"{KOHYA_KEY}.alpha": torch.tensor(1.0)}, path)
    return str(path)


def bump_mtime(path: str, seconds: int = 10) -> None:
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 1_000_000_000))


def name_to_path(lib: SliderLibrary) -> dict[str, str]:
    return {name: lib.get(name).path for name in lib.names()}


# --------------------------------------------------------------------------- scanning


def test_scans_nested_folders_and_skips_hidden_tmp_and_other_files(tmp_path):
    root = tmp_path / "sliders"
    age = make_slider(root / "age.safetensors")
    smile = make_slider(root / "faces" / "smile.safetensors")
    old = make_official_pt(root / "a" / "b" / "old.pt")
    make_slider(root / ".hidden.safetensors")
    make_slider(root / ".cache" / "inside_hidden_dir.safetensors")
    (root / ".age.safetensors.x1y2.tmp").write_bytes(b"partial")  # what _write_atomic leaves while writing
    (root / "half.safetensors.tmp").write_bytes(b"partial")
    (root / "notes.txt").write_text("not a slider")
    (root / "folder.safetensors").mkdir()  # a folder with a slider-like name

    lib = SliderLibrary([str(root)])
    assert lib.names() == ["age", "old", "smile"]  # the first query scans
    assert name_to_path(lib) == {"age": age, "old": old, "smile": smile}

    entry = lib.get("age")
    assert entry.size == os.path.getsize(age) and entry.mtime == os.path.getmtime(age)
    assert entry.metadata["sliders.arch"] == "sd1" and entry.alias == "age"
    assert lib.get("old").metadata == {} and lib.get("old").alias is None


def test_missing_folders_are_empty(tmp_path):
    lib = SliderLibrary([str(tmp_path / "nope")], [str(tmp_path / "nope2")])
    lib.refresh()
    assert lib.names() == []


def test_refresh_sees_new_and_removed_files(tmp_path):
    root = tmp_path / "sliders"
    first = make_slider(root / "first.safetensors")
    lib = SliderLibrary([str(root)])
    assert lib.names() == ["first"]
    make_slider(root / "second.safetensors")
    assert lib.names() == ["first"]  # until refreshed
    os.remove(first)
    lib.refresh()
    assert lib.names() == ["second"]


def test_names_sort_case_insensitively(tmp_path):
    root = tmp_path / "sliders"
    for stem in ("beta", "Alpha", "gamma", "Delta"):
        make_slider(root / f"{stem}.safetensors")
    assert SliderLibrary([str(root)]).names() == ["Alpha", "beta", "Delta", "gamma"]


def test_duplicate_stems_get_unique_deterministic_names(tmp_path):
    root, lora = tmp_path / "sliders", tmp_path / "Lora"
    paths = {
        "age": make_slider(root / "age.safetensors"),
        "sub/age": make_slider(root / "sub" / "age.safetensors"),
        "sub/age.pt": make_official_pt(root / "sub" / "age.pt"),  # same folder, other suffix
        "sub/deeper/age": make_slider(root / "sub" / "deeper" / "age.safetensors"),
        "other/AGE": make_slider(root / "other" / "AGE.safetensors"),  # names are unique ignoring case
        "Lora/age": make_slider(lora / "age.safetensors"),  # same relative path in another root
        "Lora/sub/age": make_slider(lora / "sub" / "age.safetensors"),
    }
    lib = SliderLibrary([str(root)], [str(lora)])
    assert name_to_path(lib) == paths
    assert lib.names() == sorted(paths, key=str.casefold)

    # The same files give the same names, whatever the order the file system lists them in.
    again = SliderLibrary([str(root)], [str(lora)])
    again.refresh()
    assert name_to_path(again) == paths
    lib.refresh()
    assert name_to_path(lib) == paths


def test_lora_folder_only_contributes_slider_tagged_safetensors(tmp_path):
    root, lora = tmp_path / "sliders", tmp_path / "Lora"
    make_plain_lora(lora / "style.safetensors", {"ss_output_name": "style", "ss_network_module": "networks.lora"})
    make_plain_lora(lora / "bare.safetensors")
    make_official_pt(lora / "official.pt")  # pickles in the Lora folder are the webui's business
    tagged = make_slider(lora / "characters" / "eyes.safetensors")
    plain_in_sliders = make_plain_lora(root / "leco.safetensors")  # in the sliders folder any LoRA counts

    lib = SliderLibrary([str(root)], [str(lora)])
    assert name_to_path(lib) == {"eyes": tagged, "leco": plain_in_sliders}

    without = SliderLibrary([str(root)], [str(lora)], include_lora_sliders=False)
    assert without.names() == ["leco"]


def test_a_file_reachable_from_two_roots_is_listed_once(tmp_path):
    lora = tmp_path / "Lora"
    inner = lora / "sliders"
    path = make_slider(inner / "age.safetensors")
    lib = SliderLibrary([str(inner)], [str(lora), str(lora)])  # sliders folder inside the Lora folder
    assert name_to_path(lib) == {"age": path}


def test_scan_reads_only_headers(tmp_path, monkeypatch):
    root, lora = tmp_path / "sliders", tmp_path / "Lora"
    make_slider(root / "age.safetensors", title="Age")
    make_official_pt(root / "old.pt")
    make_slider(lora / "eyes.safetensors")
    make_plain_lora(lora / "style.safetensors")

    def no_tensors(*args, **kwargs):
        raise AssertionError("a scan must not load tensors")

    for target, attribute in [(safetensors, "safe_open"), (safetensors.torch, "load_file"), (safetensors.torch, "load"),
                              (torch, "load"), (slider_file, "safe_open"), (slider_file, "load_slider"),
                              (library_module, "load_slider")]:
        monkeypatch.setattr(target, attribute, no_tensors)

    lib = SliderLibrary([str(root)], [str(lora)])
    lib.refresh()
    assert lib.names() == ["age", "eyes", "old"]
    assert lib.get("age").metadata["ss_output_name"] == "Age"


def test_header_size_is_capped(tmp_path):
    path = make_slider(tmp_path / "age.safetensors")
    assert read_safetensors_metadata(path)["sliders.arch"] == "sd1"
    with pytest.raises(SliderFileError, match="header size"):
        read_safetensors_metadata(path, max_header_size=16)


def test_damaged_files_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    root, lora = tmp_path / "sliders", tmp_path / "Lora"
    good = make_slider(root / "good.safetensors")
    data = open(good, "rb").read()
    damaged = {
        "truncated": data[:-4],
        "garbage": b"this is not a safetensors file at all",
        "huge_header": (10**12).to_bytes(8, "little") + b"{}",
        "not_json": (4).to_bytes(8, "little") + b"{{{{",
        "empty": b"",
    }
    for stem, content in damaged.items():
        (root / f"{stem}.safetensors").write_bytes(content)
    (root / "bad.pt").write_bytes(b"plain text, not a pickle")
    (root / "empty.ckpt").write_bytes(b"")
    (lora / "sub").mkdir(parents=True)
    (lora / "sub" / "broken.safetensors").write_bytes(data[: len(data) // 2])

    lib = SliderLibrary([str(root)], [str(lora)])
    with caplog.at_level(logging.WARNING, logger="lib_sliders.library"):
        lib.refresh()
    assert lib.names() == ["good"]
    warned = "\n".join(record.getMessage() for record in caplog.records)
    for stem in damaged:
        assert str(root / f"{stem}.safetensors") in warned
    assert str(root / "bad.pt") in warned and str(root / "empty.ckpt") in warned
    assert str(lora / "sub" / "broken.safetensors") in warned

    # An unchanged damaged file is not reported again on every refresh.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lib_sliders.library"):
        lib.refresh()
    assert caplog.records == []


# --------------------------------------------------------------------------- lookups


@pytest.mark.parametrize("name", [
    "../outside/secret", "../../etc/passwd", "sub/../age", "./age", "sub//age", "sub\\age", "age.safetensors",
    "/etc/passwd", "", "secret",
])
def test_names_are_never_paths(tmp_path, name):
    root = tmp_path / "sliders"
    make_slider(root / "age.safetensors")
    make_slider(root / "sub" / "age.safetensors")
    secret = make_slider(tmp_path / "outside" / "secret.safetensors")
    lib = SliderLibrary([str(root)])

    for query in (name, secret, str(root / "age.safetensors"), str(root / "sub" / "age")):
        assert lib.get(query) is None
        with pytest.raises(SliderError, match="not found"):
            lib.load(query)
    assert all(entry.path.startswith(str(root)) for entry in lib.entries())


def test_lookup_by_name_then_alias_then_ignoring_case(tmp_path):
    root = tmp_path / "sliders"
    age = make_slider(root / "age_v3_final.safetensors", title="Age")
    older = make_slider(root / "age.safetensors", title="Older")  # its name beats the other file's alias
    smile = make_slider(root / "Smile.safetensors", title="grin")
    lib = SliderLibrary([str(root)])

    assert lib.get("age").path == older
    assert lib.get("Age").path == age  # alias, before ignoring case
    assert lib.get("AGE").path == older  # ignoring case
    assert lib.get("Older").path == older
    assert lib.get("smile").path == smile and lib.get("grin").path == smile
    assert lib.get("GRIN") is None  # aliases are matched exactly
    assert lib.load("grin").name == "Smile"  # the network is named after the entry, not the query


# --------------------------------------------------------------------------- loading


def test_load_is_cached_and_reloads_a_changed_file(tmp_path):
    root = tmp_path / "sliders"
    path = make_slider(root / "age.safetensors", seed=1)
    lib = SliderLibrary([str(root)])

    network = lib.load("age")
    assert network.name == "age" and list(network.unet) == [LAYER]
    assert lib.load("age") is network
    assert lib.load("AGE") is network

    bump_mtime(path)  # touched: same bytes, new mtime
    touched = lib.load("age")
    assert touched is not network
    assert torch.equal(touched.unet[LAYER].down, network.unet[LAYER].down)

    make_slider(root / "age.safetensors", seed=2)  # rewritten (same size) without a refresh
    bump_mtime(path, 20)
    rewritten = lib.load("age")
    assert not torch.equal(rewritten.unet[LAYER].down, network.unet[LAYER].down)
    assert torch.equal(rewritten.unet[LAYER].down, tiny_network(2).unet[LAYER].down)
    assert lib.load("age") is rewritten


def test_cache_is_an_lru_of_cache_size(tmp_path):
    root = tmp_path / "sliders"
    for stem in "abc":
        make_slider(root / f"{stem}.safetensors")
    lib = SliderLibrary([str(root)], cache_size=2)
    a, b = lib.load("a"), lib.load("b")
    assert lib.load("a") is a  # a is now the most recent
    lib.load("c")  # evicts b
    assert lib.load("a") is a
    assert lib.load("b") is not b

    uncached = SliderLibrary([str(root)], cache_size=0)
    assert uncached.load("a") is not uncached.load("a")
    with pytest.raises(ValueError):
        SliderLibrary([str(root)], cache_size=-1)


def test_load_errors(tmp_path):
    root = tmp_path / "sliders"
    gone = make_slider(root / "gone.safetensors")
    broken = make_slider(root / "broken.safetensors")
    lib = SliderLibrary([str(root)])
    lib.refresh()

    with pytest.raises(SliderError, match="slider 'nope' not found") as error:
        lib.load("nope")
    assert not isinstance(error.value, SliderFileError)

    os.remove(gone)
    with pytest.raises(SliderFileError, match="not found") as error:
        lib.load("gone")
    assert error.value.path == gone

    with open(broken, "r+b") as file:  # damaged after the scan: load_slider's error, naming the file
        file.truncate(os.path.getsize(broken) - 4)
    with pytest.raises(SliderFileError) as error:
        lib.load("broken")
    assert error.value.path == broken


# --------------------------------------------------------------------------- hashes and info


def test_short_hash_is_sshs_model_hash_when_present(tmp_path):
    root = tmp_path / "sliders"
    path = make_slider(root / "age.safetensors")
    lib = SliderLibrary([str(root)])
    model_hash = read_safetensors_metadata(path)["sshs_model_hash"]
    assert lib.short_hash("age") == model_hash[:12]


def tensor_bytes_sha256(path: str) -> str:
    """Independently of the library: sha256 of everything after the 8-byte length and the JSON header."""
    data = open(path, "rb").read()
    header_size = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_size:]).hexdigest()


def test_short_hash_is_computed_like_a1111_without_sshs(tmp_path):
    root = tmp_path / "sliders"
    plain = make_plain_lora(root / "plain.safetensors", {"ss_output_name": "plain"})
    pickled = make_official_pt(root / "old.pt")
    lib = SliderLibrary([str(root)])

    assert lib.short_hash("plain") == tensor_bytes_sha256(plain)[:12]
    assert lib.short_hash("old") == hashlib.sha256(open(pickled, "rb").read()).hexdigest()[:12]

    # User edits of the header don't change a computed hash (it covers the tensor bytes only) ...
    tensors = safetensors.torch.load_file(plain)
    safetensors.torch.save_file(tensors, plain, metadata={"ssmd_description": "edited"})
    bump_mtime(plain)
    assert lib.short_hash("plain") == tensor_bytes_sha256(plain)[:12]
    # ... while new weights do, without a refresh.
    before = lib.short_hash("plain")
    make_plain_lora(root / "plain.safetensors")
    bump_mtime(plain, 20)
    assert lib.short_hash("plain") != before
    assert lib.short_hash("plain") == tensor_bytes_sha256(plain)[:12]


def test_short_hash_is_cached(tmp_path, monkeypatch):
    root = tmp_path / "sliders"
    make_plain_lora(root / "plain.safetensors")
    lib = SliderLibrary([str(root)])
    first = lib.short_hash("plain")
    monkeypatch.setattr(library_module, "compute_short_hash", lambda path: pytest.fail("hashed twice"))
    assert lib.short_hash("plain") == first
    with pytest.raises(SliderError, match="not found"):
        lib.short_hash("nope")


def test_name_for_hash_finds_a_renamed_file_and_hashes_only_what_it_must(tmp_path, monkeypatch):
    root = tmp_path / "sliders"
    make_plain_lora(root / "a.safetensors")
    make_plain_lora(root / "b.safetensors")
    make_official_pt(root / "broken.pt")
    (root / "broken.pt").write_bytes(b"")  # unreadable as a slider: skipped by the scan or the hash, never raised
    lib = SliderLibrary([str(root)])
    b_hash = lib.short_hash("b")
    assert lib.name_for_hash(b_hash) == "b"
    assert lib.name_for_hash(b_hash.upper()) == "b"
    assert lib.name_for_hash(" ") is None

    # A hash already known is found without hashing anything.
    monkeypatch.setattr(library_module, "compute_short_hash", lambda path: pytest.fail(f"hashed {path}"))
    assert lib.name_for_hash(b_hash) == "b"
    monkeypatch.undo()
    assert lib.name_for_hash("000000000000") is None
    assert lib.name_for_hash(lib.short_hash("a")) == "a"


def test_info(tmp_path):
    root = tmp_path / "sliders"
    make_slider(root / "age.safetensors", alpha_range=(-5.0, 5.0), default_start=0.2,
                extra_metadata={"ssmd_description": "Makes people older"})
    make_slider(root / "spec.safetensors", extra_metadata={"modelspec.description": "From modelspec"})
    make_plain_lora(root / "xl.safetensors", {"ss_base_model_version": "sdxl_base_v1-0"})
    make_official_pt(root / "old.pt")
    lib = SliderLibrary([str(root)])

    age = lib.info("age")
    assert age["alpha_range"] == (-5.0, 5.0) and age["default_start"] == 0.2
    assert age["description"] == "Makes people older" and age["arch"] == "sd1"
    assert lib.info("spec")["description"] == "From modelspec"
    assert lib.info("xl")["arch"] == "sdxl" and lib.info("xl")["description"] is None
    old = lib.info("old")
    assert old["alpha_range"] == (-3.0, 3.0) and old["default_start"] == 0.0 and old["arch"] is None
    with pytest.raises(SliderError, match="not found"):
        lib.info("nope")


# --------------------------------------------------------------------------- threads


def test_concurrent_refresh_load_and_lookup(tmp_path):
    root = tmp_path / "sliders"
    for index in range(4):
        make_slider(root / f"s{index}.safetensors", seed=index)
    lib = SliderLibrary([str(root)], cache_size=2)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for step in range(15):
                name = f"s{(worker + step) % 4}"
                if step % 5 == 0:
                    lib.refresh()
                assert lib.get(name) is not None
                assert lib.load(name).name == name
                assert len(lib.short_hash(name)) == 12
                assert len(lib.names()) == 4
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_slider_loaded_inside_inference_mode_holds_normal_tensors(tmp_path):
    """Forge runs jobs under torch.inference_mode(): the cached slider must still serve training afterwards."""
    make_slider(tmp_path / "a.safetensors")
    lib = SliderLibrary([str(tmp_path)])
    with torch.inference_mode():
        network = lib.load("a")
    module = next(iter(network.unet.values()))
    assert not module.down.is_inference() and not module.up.is_inference()
    x = torch.randn(3, 8, requires_grad=True)
    torch.nn.functional.linear(x, module.down).sum().backward()  # autograd may save it
