"""The installed sliders: a scan of the slider folders (and slider-tagged LoRAs in the Lora folders).

Webui-independent; the webui integration makes one ``SliderLibrary`` (``slider_library``) with the
``--sliders-dir`` folder and the Lora folders and calls ``refresh()`` when the user asks for it. The scan
walks the folders and names the files (``folder_scan``), reading only their headers (``headers``); the
short hash the webui shows for a LoRA is ``short_hash``'s.
"""
