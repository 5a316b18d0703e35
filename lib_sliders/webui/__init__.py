"""The webui side of Concept Sliders: the only part of ``lib_sliders`` that imports the webui's ``modules``.

The entry script (``scripts/concept_sliders.py``) imports ``script`` and calls ``register()``; everything
else here is reached from there.

Generating: ``script`` (the always-on script and the callbacks), ``args`` (its argument), ``runtime`` (one job's
sliders on the live model), ``row_layout`` (which image each UNet row belongs to), ``infotext_records`` (what each image got, for its
infotext), ``model_following`` (the
engine on ``shared.sd_model``'s UNet), ``models`` (where the UNet and text encoders of a loaded model are),
``network`` (the ``slider`` extra network), ``overrides`` and ``xyz`` (X/Y/Z plot axes), ``settings``.
UI: ``accordion`` and ``ui_state`` (the txt2img/img2img accordion), ``page`` and ``user_metadata`` (Extra Networks
cards and the card editor), ``api`` (HTTP routes).
Training: ``train_tab`` (the tab), ``train_form``, ``train_form_parse``, ``train_form_fill``, ``train_messages``
and ``train_uploads`` (its form), ``train_jobs`` (jobs from the tab or the API), ``train_webui`` (training on the
loaded model).
Host: ``host_kind`` (AUTOMATIC1111's webui or SD WebUI Forge; what is refused on Forge until its backend exists),
``forge_runtime`` (the runtime on Forge's UNet).
"""
