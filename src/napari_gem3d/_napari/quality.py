"""The sampler's quality presets in the docks: one "Quality" choice kept in step with solver, steps and eta.

The presets are ``sampling.request.QUALITY_PRESETS`` (the CLI's ``--quality``). Choosing one sets the three
controls; editing a control by hand shows the preset it now matches, else "Custom" (eta counts for DDIM only:
DPM-Solver++ ignores it).
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, FloatSpinBox, SpinBox

from ..sampling.request import MAX_LESION_GUIDANCE, QUALITY_PRESETS

#: the docks' names of the presets: name -> (solver, steps, eta)
QUALITY = {f"{name.capitalize()} ({preset[1]} steps)": preset for name, preset in QUALITY_PRESETS.items()}
CUSTOM = "Custom (Advanced)"
TOOLTIP = (f"Fast: DPM-Solver++, {QUALITY_PRESETS['fast'][1]} denoising steps (about a third of Standard's time, "
           "as good on held-out brains); "
           "Standard: deterministic DDIM (eta 0), 25 steps; Official: DDIM, 50 steps, eta 1, as the paper. Custom: "
           "the solver, steps and eta set under Advanced")
SOLVERS = [("DDIM", "ddim"), ("DPM-Solver++ 2M", "dpmpp2m"), ("DPM-Solver++ 2M SDE", "dpmpp2m_sde")]


def _key(solver: str, steps: int, eta: float) -> tuple:
    return solver, int(steps), round(float(eta), 6) if solver == "ddim" else None


def preset_name(solver: str, steps: int, eta: float) -> str:
    """The preset these settings make, else :data:`CUSTOM`."""
    chosen = _key(solver, steps, eta)
    return next((name for name, preset in QUALITY.items() if _key(*preset) == chosen), CUSTOM)


def lesion_strength_spin() -> FloatSpinBox:
    """Lesion guidance (``SamplingOptions.lesion_guidance``) as the docks show it."""
    return FloatSpinBox(
        name="lesion_strength", label="Lesion strength", min=1.0, max=MAX_LESION_GUIDANCE, step=0.5, value=1.0,
        tooltip="how strongly the lesion labels are drawn: 1 as the network draws them; higher multiplies each "
                "lesion label's effect (lesion guidance). The demo model draws lesions fainter than they are: 3 "
                "brought held-out tumours near their real contrast (docs/make-mask.md). Windows with a lesion "
                "take one more network pass per lesion label. Used with a model whose card names lesion labels "
                "(GEM-3D method, not with official compat)",
    )


def lesion_guidance_for(spin: FloatSpinBox, bundle) -> float:
    """The strength asked for in ``spin``, or 1 (none) when ``bundle``'s card names no lesion labels."""
    return float(spin.value) if bundle.config.card.lesion_labels else 1.0


def solver_combo() -> ComboBox:
    return ComboBox(name="solver", label="Solver", choices=SOLVERS, value="ddim",
                    tooltip="DDIM: the official sampler (eta > 0 adds noise at every step). DPM-Solver++ 2M: "
                            "deterministic (eta is ignored), about as good at 6-8 steps as DDIM at 25. "
                            "DPM-Solver++ 2M SDE: adds correlated noise at every step like DDIM at eta 1, "
                            "smoother across slices at 6-8 steps. Neither with the official-compat mode")


def quality_combo() -> ComboBox:
    return ComboBox(name="quality", label="Quality", choices=[*QUALITY, CUSTOM], value=next(iter(QUALITY)),
                    tooltip=TOOLTIP)


def link_quality(quality: ComboBox, solver: ComboBox, steps: SpinBox, eta: FloatSpinBox) -> None:
    """Keep ``quality`` and the three controls in step (see the module docstring); applies the current preset."""
    setting = [False]

    def chosen(*_) -> None:
        preset = QUALITY.get(quality.value)
        if preset is None:
            return
        setting[0] = True
        try:
            solver.value, steps.value, eta.value = preset
        finally:
            setting[0] = False

    def edited(*_) -> None:
        if not setting[0]:
            quality.value = preset_name(solver.value, steps.value, eta.value)

    quality.changed.connect(chosen)
    for control in (solver, steps, eta):
        control.changed.connect(edited)
    chosen()


__all__ = ["CUSTOM", "QUALITY", "SOLVERS", "link_quality", "preset_name", "quality_combo", "solver_combo"]
