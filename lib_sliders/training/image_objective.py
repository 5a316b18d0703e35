"""The image-slider objective: before/after pairs, trained two-sided.

For a pair (before, after) and a scale s, both images are noised with the *same* noise ε to the same
timestep; the slider at α=+s must predict ε on the noised "after" latent and at α=−s on the noised
"before" latent (the paper's ‖ε_θ+(x_t^after) − ε‖² + ‖ε_θ−(x_t^before) − ε‖²). Both rows go through
the UNet in one call, with a different α per row. A slider used from a start trains only at the
timesteps from there on.
"""

from __future__ import annotations

import torch

from ..errors import SliderError
from .backend import DiffusionBackend, select_cond
from .schedule import add_noise, ddim_timesteps, first_training_step


def load_image(path: str, resolution: int) -> torch.Tensor:
    """``[3, R, R]`` in [−1, 1]: RGB (grey, palette and alpha images too), scaled and centre-cropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = resolution / min(image.size)
            size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC)
            left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
            data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    except FileNotFoundError:
        raise SliderError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as error:
        raise SliderError(f"{path}: not a readable image ({error})") from None
    return data.reshape(resolution, resolution, 3).permute(2, 0, 1).float() / 127.5 - 1.0


class ImageObjective:
    def __init__(self, backend: DiffusionBackend, config, run, start: float = 0.0):
        self.backend = backend
        self.config = config
        self.run = run
        self.first_step = first_training_step(start, config.max_denoising_steps)
        size = config.resolution
        # Latents of every pair, encoded once (the VAE never runs inside the loop).
        befores = torch.stack([load_image(p.before, size) for p in config.pairs])
        afters = torch.stack([load_image(p.after, size) for p in config.pairs])
        self.before = self._encode(befores)
        self.after = self._encode(afters)
        self.cond = backend.encode_prompts([config.image_prompt])
        self.scales = torch.tensor([abs(s) for s in config.scales], dtype=torch.float32)
        self.timesteps = ddim_timesteps(config.max_denoising_steps, len(backend.alphas_cumprod))

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        # The VAE samples its latent from the global RNG (ldm's posterior ``sample()``): seed it from the config,
        # and leave the caller's RNG as it was, so that a run, and a resumed one, is the same run.
        with torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            return torch.cat([self.backend.encode_images(chunk) for chunk in images.split(4)])

    def _sample(self, generator: torch.Generator, batch: int):
        pairs = torch.randint(0, len(self.before), (batch,), generator=generator)
        scales = self.scales[torch.randint(0, len(self.scales), (batch,), generator=generator)]
        steps = torch.randint(self.first_step, self.config.max_denoising_steps, (batch,), generator=generator)
        noise = self.run.randn(batch, generator=generator)
        t = self.timesteps[steps].to(noise.device)
        alphas = self.backend.alphas_cumprod[t]
        after = add_noise(self.after[pairs].to(noise.device), noise, alphas)
        before = add_noise(self.before[pairs].to(noise.device), noise, alphas)
        return after, before, noise, t, scales

    def loss(self) -> torch.Tensor:
        run = self.run
        batch = self.config.batch_size
        after, before, noise, t, scales = self._sample(run.generator, batch)
        run.set_alpha(torch.cat([scales, -scales]))
        cond = select_cond(self.cond, [0] * (2 * batch))
        with run.autocast():
            prediction = run.predict(torch.cat([after, before]), torch.cat([t, t]), cond)
        return torch.nn.functional.mse_loss(prediction.float(), torch.cat([noise, noise]))

    @torch.no_grad()
    def effect_batch(self, generator: torch.Generator, samples: int):
        """Held-out (x_t, t, cond, wanted Δε per unit α, base ε) on noised "after" latents."""
        run = self.run
        after, _, noise, t, scales = self._sample(generator, samples)
        cond = select_cond(self.cond, [0] * samples)
        run.set_alpha(torch.tensor(0.0))
        with run.autocast():
            base = run.predict(after, t, cond).float()
        wanted = (noise - base) / scales.to(noise.device).reshape(-1, 1, 1, 1)
        return after, t, cond, wanted, base
