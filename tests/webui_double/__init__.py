"""A small test double of the AUTOMATIC1111 webui host API (v1.10.1 / dev), for CI.

``modules`` mirrors the names, signatures and call order of the webui's own ``modules`` package for
the parts an extension touches; ``scripts/xyz_grid.py`` stands in for the X/Y/Z plot script and
``extensions-builtin/Lora`` for the built-in Lora (``networks``, ``network``, … with its lazy weight backups;
loaded by ``webui_env(root, lora=True)``). The
test fixture in ``conftest_helpers`` puts this folder first on ``sys.path``, so ``from modules import
…`` inside the extension resolves here. Nothing in it is copied from the webui; it is rewritten from
the facts in ``shared/reference/webui-host.md`` and the webui's sources.
"""
