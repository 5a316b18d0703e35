"""Parts of bench/fidelity.py: the benchmark's sliders, measurement, store of trained sliders and report."""
