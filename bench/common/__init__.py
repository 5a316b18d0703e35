"""Small models with random weights, built from the real architecture code, shared by the benchmarks and the
tests: ``tiny_models`` (ldm / sgm UNets), ``toy_diffusion`` (a whole tiny latent-diffusion model), and
``random_sliders`` (sliders with random factors for those UNets)."""
