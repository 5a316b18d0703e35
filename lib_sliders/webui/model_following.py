"""Keeping the applied sliders on the model the webui samples with: the engine follows ``shared.sd_model``'s UNet.

The webui may make another already loaded model current without ``on_model_loaded`` (the setting "Maximum number
of checkpoints loaded at the same time" > 1: "Using already loaded model …", also for the refiner and the hires
checkpoint). So at every batch and every sampling step the runtime checks that its engine sits on
``shared.sd_model``'s UNet (the module itself) and moves the sliders over when it doesn't.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..apply.engine import SliderEngine
from .models import text_encoders_of, unet_of

if TYPE_CHECKING:
    from ..apply.job_plan import BatchPlan
    from .runtime import Host


class ModelFollowing:
    """``SlidersRuntime``'s engine on the current model: made for it, and moved with the applied plan when the
    model changes. Uses the runtime's ``host``, applied plan, ``clear``, ``_apply_plan`` and engine callbacks."""

    host: Host
    _engine: SliderEngine | None
    _engine_model: object
    _applied: BatchPlan | None
    _applied_p: object

    def on_model_loaded(self, sd_model) -> None:
        """New weights (checkpoint change, refiner swap): move what is applied over to them.

        The webui loads another checkpoint into the same model object when it can; merged deltas were
        overwritten then and are merged again. A new model object gets the sliders attached anew.
        """
        if self._engine is None:
            return
        if self._engine_model is sd_model:
            self._engine.weights_replaced()
            return
        p, plan = self._applied_p, self._applied
        self.clear()
        if plan:
            self._apply_plan(p, plan, record=False)

    def follow_model(self) -> None:
        """Move the applied sliders to ``shared.sd_model`` when the engine sits on another UNet.

        The webui switches to an already loaded model without ``on_model_loaded`` (see the module docstring):
        the old model must keep no hook and the sliders must act on the new one.
        """
        if self._engine is None or self._on_current_model():
            return
        p, plan = self._applied_p, self._applied
        self.clear()
        if plan and self.host.sd_model() is not None:
            self._apply_plan(p, plan, record=False)

    def _on_current_model(self) -> bool:
        model = self.host.sd_model()
        return self._engine is not None and self._engine_model is model and self._engine.unet is _unet_or_none(model)

    def _engine_for(self, sd_model) -> SliderEngine:
        if self._engine is not None and self._engine_model is sd_model and self._engine.unet is unet_of(sd_model):
            return self._engine
        self.clear()
        # Text-encoder deltas as forward hooks: the built-in Lora rewrites those weights lazily and
        # would capture (and keep) anything merged into them.
        self._engine = SliderEngine(unet_of(sd_model), text_encoders_of(sd_model), text_mode="hooks")
        self._engine_model = sd_model
        # A slider failing inside the model must not fail the generation; nor must another extension's UNet
        # calls of other sizes (see SliderEngine).
        self._engine.contain_errors = True
        self._engine.on_failure = self._late_failure
        self._engine.on_rows_mismatch = self._rows_mismatch
        return self._engine


def _unet_or_none(sd_model):
    try:
        return unet_of(sd_model)
    except AttributeError:
        return None
