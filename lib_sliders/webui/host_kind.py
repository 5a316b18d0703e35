"""Which webui hosts the extension: AUTOMATIC1111's, or SD WebUI Forge / one of its forks.

Forge keeps the webui's ``modules`` API but replaces the model underneath: ``shared.sd_model`` is a
``ForgeDiffusionEngine`` whose UNet, text encoders and VAE sit in ``sd_model.forge_objects`` (patchers run by
Forge's own memory manager and sampling function) and which has no ``sd_model.model.diffusion_model``. Forge's
older line (Forge Classic, reForge) keeps an ldm model beside ``forge_objects`` but samples and patches through the
same kind of patchers. Sliders applied the A1111 way would half-work there, so every feature not yet ported is
refused with one clear line (``refusal``); ``docs/forge.md`` is the map for the port.

Detection: the ``modules_forge`` package (every Forge line has it at the webui root, and its own ``modules``
import it, so it is loaded before extensions are), or a model with ``forge_objects``. The fork's name comes from
``modules_forge/forge_version.py`` where it tells (``version = "classic"`` / ``"neo"``); otherwise its version text
is shown as is. Nothing here imports the webui's ``modules``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass

from ..prompt.prompt_tags import NETWORK_NAME, RE_EXTRA_NET

FORGE_PACKAGE = "modules_forge"
FORGE_VERSION_MODULE = FORGE_PACKAGE + ".forge_version"

GENERATION = "generation"
TRAINING = "training"
# Features whose Forge backend is done; until one is listed here it is refused on Forge. Generation: forge_runtime
# (a UNet stored in nf4/fp4/gguf is still refused there, per slider). Training: forge_training, on Forge's own
# backend only (``FORGE_BACKEND_MODULE``; Forge Classic and reForge have ``ldm_patched`` instead).
SUPPORTED_ON_FORGE: frozenset[str] = frozenset({GENERATION, TRAINING})
FORGE_BACKEND_MODULE = "backend.memory_management"

# forge_version.version → the fork's name (the forks that say who they are)
_FORK_NAMES = {"classic": "SD WebUI Forge Classic", "neo": "SD WebUI Forge Neo"}


@dataclass(frozen=True)
class HostKind:
    forge: bool
    name: str  # "AUTOMATIC1111 webui", "SD WebUI Forge", "SD WebUI Forge Classic", …
    version: str | None = None  # Forge's version text (its release for Neo), when known

    @property
    def label(self) -> str:
        """The name to show, with the version when the name doesn't already say it."""
        return f"{self.name} ({self.version})" if self.version else self.name


A1111 = HostKind(forge=False, name="AUTOMATIC1111 webui")


def _importable(module: str) -> bool:
    """Whether ``module`` is loaded or can be found (a submodule's parent package may get imported to look)."""
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def forge_installed() -> bool:
    """Whether the ``modules_forge`` package is loaded or importable (without importing it)."""
    return _importable(FORGE_PACKAGE)


def forge_model(sd_model) -> bool:
    """Whether ``sd_model`` was loaded by Forge (its engine, or an ldm model it patched, has ``forge_objects``)."""
    return sd_model is not None and hasattr(sd_model, "forge_objects")


def _forge_kind() -> HostKind:
    try:
        module = importlib.import_module(FORGE_VERSION_MODULE)
    except Exception:  # noqa: BLE001 — a name only; Forge without the file is still Forge
        return HostKind(forge=True, name="SD WebUI Forge")
    version = str(getattr(module, "version", "") or "").strip() or None
    release = str(getattr(module, "release", "") or "").strip() or None
    name = _FORK_NAMES.get((version or "").lower())
    if name is not None:
        return HostKind(forge=True, name=name, version=release)
    return HostKind(forge=True, name="SD WebUI Forge", version=version)


def detect(sd_model=None) -> HostKind:
    """The host: Forge when ``modules_forge`` is there or ``sd_model`` has ``forge_objects``, else A1111.

    ``sd_model`` is only looked at when the package isn't there (pass None to decide on the package alone, e.g.
    while the UI is built and no model need be loaded).
    """
    if forge_installed() or forge_model(sd_model):
        return _forge_kind()
    return A1111


def is_forge(sd_model=None) -> bool:
    return detect(sd_model).forge


# ---------------------------------------------------------------------------------------------- refusals


def forge_backend_installed() -> bool:
    """Whether Forge's own backend (its memory manager) is loaded or importable: SD WebUI Forge 2 and Neo."""
    return _importable(FORGE_BACKEND_MODULE)


def _without_forge_backend(feature: str, host: HostKind) -> str | None:
    if feature == TRAINING and not forge_backend_installed():
        return (f"training sliders needs SD WebUI Forge's own backend, which {host.label} doesn't have; train them "
                "in SD WebUI Forge or the AUTOMATIC1111 webui")
    return None


def refusal(feature: str, sd_model=None) -> str | None:
    """Why ``feature`` (``GENERATION``, ``TRAINING``) can't be used on this host, in one line; None when it can."""
    host = detect(sd_model)
    if not host.forge:
        return None
    if feature in SUPPORTED_ON_FORGE:
        return _without_forge_backend(feature, host)
    if feature == GENERATION:
        return f"sliders are not applied on {host.label} yet; the image is made without them"
    if feature == TRAINING:
        return f"training sliders is not supported on {host.label} yet; train them in the AUTOMATIC1111 webui"
    return f"{feature} is not supported on {host.label} yet"


def ui_note(feature: str) -> str | None:
    """The one-line note the accordion (``GENERATION``) or the Train tab (``TRAINING``) shows on Forge, else None.

    Decided on the ``modules_forge`` package alone: building the UI must not load a model.
    """
    host = detect(None)
    if not host.forge:
        return None
    if feature in SUPPORTED_ON_FORGE:
        missing = _without_forge_backend(feature, host)
        return None if missing is None else missing[0].upper() + missing[1:] + "."
    if feature == GENERATION:
        return (f"Sliders are not applied on {host.label} yet: <slider:…> tags are removed from the prompt and "
                "images are made without them.")
    return f"Training sliders is not supported on {host.label} yet: train them in the AUTOMATIC1111 webui."


def prompts_have_sliders(prompts) -> bool:
    """Whether any prompt holds a ``<slider:…>`` tag."""
    for prompt in prompts or ():
        if isinstance(prompt, str) and any(m.group(1) == NETWORK_NAME for m in RE_EXTRA_NET.finditer(prompt)):
            return True
    return False


REFUSED_ATTRIBUTE = "sliders_refused"  # on ``p``: the job's refusal was reported


def refuse_generation(p, report, wanted: bool, sd_model=None) -> bool:
    """On a host where sliders aren't applied yet: True, and the caller must leave the model alone.

    ``wanted``: the job asked for sliders (UI rows, API args, X/Y/Z, tags); then ``report(p, message)`` tells it
    once per job (console and the comments under the image). False on a host where sliders work.
    """
    message = refusal(GENERATION, sd_model)
    if message is None:
        return False
    if wanted and p is not None and not getattr(p, REFUSED_ATTRIBUTE, False):
        setattr(p, REFUSED_ATTRIBUTE, True)
        report(p, message)
    return True
