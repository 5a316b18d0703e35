"""Procedural toy world (one flat shape on a grey background) for the fidelity benchmark."""
