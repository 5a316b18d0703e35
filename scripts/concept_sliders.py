"""Entry script the webui loads: everything lives in ``lib_sliders`` (``lib_sliders/webui`` for the webui glue).

The webui puts this extension's folder on ``sys.path`` while it imports this file, so the package imports
as ``lib_sliders`` and stays cached in ``sys.modules`` across "Reload UI".
"""

from lib_sliders.webui.script import ConceptSlidersScript, register

register()

__all__ = ["ConceptSlidersScript"]
