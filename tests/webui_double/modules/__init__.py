"""Double of the webui's ``modules`` package (see ``tests/webui_double/__init__.py``)."""
