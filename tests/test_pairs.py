import pytest

from lib_sliders.errors import SliderError
from lib_sliders.training.pairs import match_pairs


def touch(folder, *names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_pairs_match_by_name_whatever_the_extension(tmp_path):
    touch(tmp_path / "low", "01.png", "02.JPG", "notes.txt", ".hidden.png")
    touch(tmp_path / "high", "01.webp", "02.jpg")
    pairs = match_pairs(str(tmp_path / "low"), str(tmp_path / "high"))
    assert [(p.before.rsplit("/", 1)[1], p.after.rsplit("/", 1)[1]) for p in pairs] == [
        ("01.png", "01.webp"), ("02.JPG", "02.jpg")]


def test_unpartnered_images_are_listed(tmp_path):
    touch(tmp_path / "low", "01.png", "02.png")
    touch(tmp_path / "high", "01.png", "03.png")
    with pytest.raises(SliderError, match=r"without a partner: 02\.png, 03\.png"):
        match_pairs(str(tmp_path / "low"), str(tmp_path / "high"))


def test_missing_or_empty_folders_are_named(tmp_path):
    touch(tmp_path / "low")
    touch(tmp_path / "high")
    with pytest.raises(SliderError, match="no images"):
        match_pairs(str(tmp_path / "low"), str(tmp_path / "high"))
    with pytest.raises(SliderError, match="nowhere: not a folder"):
        match_pairs(str(tmp_path / "nowhere"), str(tmp_path / "high"))
