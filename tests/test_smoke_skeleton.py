"""The package imports without the webui and knows its version."""

import lib_sliders


def test_version_is_a_string():
    assert isinstance(lib_sliders.__version__, str)
    assert lib_sliders.__version__
