"""Run by the webui (as a subprocess, at startup) before it loads extensions.

Installs nothing: everything this extension needs at runtime (torch, safetensors, numpy, gradio) is
already part of the webui. It only checks that the packages are there and prints nothing when they
are. It doesn't import them (importing torch would slow down every webui start).
"""

import importlib.util

missing = [name for name in ("torch", "safetensors", "numpy") if importlib.util.find_spec(name) is None]
if missing:
    print(f"[sd-webui-concept-sliders] missing Python packages: {', '.join(missing)}; the webui normally provides them")
