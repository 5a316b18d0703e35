"""Applying sliders to a live model: forward hooks with per-image α, merged weights, text-encoder hooks, and the
planning that turns a job's requests into the sliders each image gets."""
