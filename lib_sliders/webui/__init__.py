"""The webui side of Concept Sliders: the only part of ``lib_sliders`` that imports the webui's ``modules``.

The entry script (``scripts/concept_sliders.py``) imports ``script`` and calls ``register()``; everything
else here is reached from there. Modules: ``models`` (where the UNet and text encoders of a loaded model
are), ``runtime`` (one generation's sliders on the live model), ``network`` (the ``slider`` extra network),
``settings``, ``accordion`` (the txt2img/img2img UI), ``paste`` (infotext), ``page`` (Extra Networks cards),
``xyz`` (X/Y/Z plot axes), ``api`` (HTTP routes).
"""
