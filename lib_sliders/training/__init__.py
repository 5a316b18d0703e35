"""Training sliders on a loaded Stable Diffusion model: text sliders (from prompts) and image sliders
(from before/after pairs). Knows nothing of the webui's UI; ``backend`` adapts the model object."""
