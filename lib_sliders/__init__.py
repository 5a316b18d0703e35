"""Concept Sliders for the Stable Diffusion webui: the webui-independent core.

Nothing in this package (except the ``webui`` adapter sub-package) imports the webui's ``modules``.
"""

__version__ = "0.1.0"
