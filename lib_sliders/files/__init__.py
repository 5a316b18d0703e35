"""Slider files: the safetensors format and its metadata, model architectures and their module layouts, and the
key maps between the webui's, kohya's and diffusers' names."""
