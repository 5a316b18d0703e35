"""One-α sliders merged into Forge's UNet the way Forge merges its own LoRAs: ``add_patches`` on a patcher clone.

With the "Merge one-α sliders" setting, a slider whose UNet part has the same α for every image of the batch and no
step gate (``start=``/``stop=``) is not hooked on Forge: right before each sampling (the webui's
``process_before_every_sampling``, after Forge has reset ``forge_objects``) the UNet patcher is cloned, the slider's
layers are added to the clone as ``("lora", (up, down, alpha, None, None))`` patches with strength α, and the clone
becomes ``forge_objects.unet``, as Forge's FreeU does with its patches. Forge's ``LoraLoader`` merges them when it
loads that patcher (``sampling_prepare``) together with its own LoRAs, backing the weights up first, and puts the
backups back when a patcher with other patches is loaded. Costs nothing per step; a change of α or of sliders costs
one re-merge, as a change of LoRA does.

When the job ends the UNet is given back its un-patched patcher, whose LoRAs are refreshed at once if ours are the
ones merged now: the weights are Forge's again (bitwise), not only at the next sampling.

Facts (Forge ``dfdcbab``): ``ModelPatcher.add_patches`` and ``LoraLoader.refresh`` (``backend/patcher/base.py``,
``backend/patcher/lora.py``), ``merge_lora_to_weight`` scales a ``"lora"`` patch by ``alpha / rank`` and the
strength; ``load_models_gpu`` → ``LoadedModel.model_load`` → ``refresh_loras`` (``backend/memory_management.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..files.lora import SliderNetwork

# Every patch set of ours is filed under a name starting with this, so ours can be told from Forge's own LoRAs in
# a patcher's ``lora_patches`` and in the loader's hash of what is merged.
PATCH_PREFIX = "concept-slider:"


@dataclass
class UnetPatch:
    """One slider's UNet part, merged at ``alpha``."""

    name: str
    network: SliderNetwork
    alpha: float

    @property
    def filename(self) -> str:
        return f"{PATCH_PREFIX}{self.name}:{self.network.source}"

    def patches(self) -> dict[str, tuple]:
        # Keys are parameter names of the patcher's model (KModel): the UNet sits at ``diffusion_model``.
        return {f"diffusion_model.{path}.weight": ("lora", (module.up, module.down, module.alpha, None, None))
                for path, module in self.network.unet.items()}


def is_ours(lora_identifier) -> bool:
    return isinstance(lora_identifier, tuple) and str(lora_identifier[0]).startswith(PATCH_PREFIX)


def can_patch(sd_model) -> bool:
    """Whether ``sd_model`` has what this needs (Forge 2's engine; the older line's patchers differ)."""
    unet = getattr(getattr(sd_model, "forge_objects", None), "unet", None)
    return (hasattr(sd_model, "forge_objects_after_applying_lora") and hasattr(unet, "clone")
            and hasattr(unet, "add_patches") and hasattr(unet, "lora_patches"))


class ForgeUnetPatches:
    """The patcher clone carrying this batch's patches, and putting the UNet back when the job is done."""

    def __init__(self):
        self._model = None  # the Forge engine whose forge_objects.unet we replaced
        self._patcher = None

    def apply(self, sd_model, patches: list[UnetPatch]) -> list[tuple[UnetPatch, int]]:
        """Put ``patches`` (α 0 ones left out) on a clone of ``sd_model.forge_objects.unet``; returns the patches
        whose layers the model lacks, with how many (the slider was validated, so this is only a safety net)."""
        patches = [patch for patch in patches if patch.alpha]
        if not patches:
            return []
        patcher = sd_model.forge_objects.unet.clone()
        for identifier in [key for key in patcher.lora_patches if is_ours(key)]:
            del patcher.lora_patches[identifier]  # e.g. the first hires call, made before Forge's reset
        missing = []
        for patch in patches:
            wanted = patch.patches()
            accepted = patcher.add_patches(filename=patch.filename, patches=wanted, strength_patch=patch.alpha)
            if len(accepted) != len(wanted):
                missing.append((patch, len(wanted) - len(accepted)))
        sd_model.forge_objects.unet = patcher
        self._model, self._patcher = sd_model, patcher
        return missing

    def restore(self) -> None:
        """The un-patched UNet patcher back in ``forge_objects``, and Forge's weights back in the UNet."""
        model, patcher = self._model, self._patcher
        self._model = self._patcher = None
        if model is None:
            return
        plain = getattr(getattr(model, "forge_objects_after_applying_lora", None), "unet", None)
        if plain is None:
            return
        if model.forge_objects.unet is patcher:
            model.forge_objects.unet = plain
        loader = getattr(plain, "lora_loader", None)
        if loader is not None and PATCH_PREFIX in str(getattr(loader, "loaded_hash", "")):
            plain.refresh_loras()  # backups back in, Forge's own LoRAs merged again (its hash no longer ours)
