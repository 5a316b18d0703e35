"""Double of SD WebUI Forge's ``modules_forge`` package (lllyasviel/stable-diffusion-webui-forge ``dfdcbab``).

Only its presence matters to the extension (``lib_sliders.webui.host_kind``): every Forge line ships this package
at the webui root. ``forge_version`` is here too; the rest of the real package (``main_entry``, ``main_thread``,
``utils``, …) is not.
"""
