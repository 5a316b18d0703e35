"""What the webui patches into gradio 3.41 at start-up that extension UIs rely on: a ``tooltip=`` keyword
on every component (kept as ``webui_tooltip``). ``undo()`` takes the patch off again (tests only)."""

import gradio as gr

_original = None


def _component_init(self, *args, **kwargs):
    self.webui_tooltip = kwargs.pop("tooltip", None)
    return _original(self, *args, **kwargs)


def apply():
    global _original
    if _original is None:
        _original = gr.components.IOComponent.__init__
        gr.components.IOComponent.__init__ = _component_init


def undo():
    global _original
    if _original is not None:
        gr.components.IOComponent.__init__ = _original
        _original = None


apply()
