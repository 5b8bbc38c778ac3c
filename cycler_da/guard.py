"""The divergence guard: every analysis is checked before it starts the next forecast.

An analysis fails when it is not finite, when a member's increment (analysis minus its
background; minus the background mean when a sampler draws its own members) has an RMS over
the grid of more than ``max_increment`` background-error standard deviations (B's, the 24-h
forecast errors of the training years) in any channel, when it fits the observations worse than
``max_fit_ratio`` times the background did (RMS of (O−A)/σ_o against max(1, RMS of
(O−B)/σ_o)), or when the method reports a non-finite diagnostic (a NaN cost). The run's
``guard.on_divergence`` then decides: ``stop`` (a clear error; earlier windows are kept and
``--resume`` retries the window), ``background`` (the window's analysis is its background) or
``3dvar`` (a 3D-Var analysis of the same window, with that method's defaults).
"""

from __future__ import annotations

import numpy as np
import torch

from cycler_da.observing import WindowObservations


def check(
    background: torch.Tensor,
    analysis: torch.Tensor,
    observations: WindowObservations,
    diagnostics: dict,
    background_std: np.ndarray,
    max_increment: float,
    max_fit_ratio: float,
) -> str | None:
    """Why the analysis fails the guard, or None if it passes.

    Args:
        background: Normalised members, (realization, channel, lat, lon).
        analysis: The method's analysis, normalised, same layout.
        observations: The window's observations and QC flags.
        diagnostics: The method's scalars.
        background_std: B's standard deviations, normalised, (channel, lat).
        max_increment: Bound on the grid RMS of (x_a − x_b) / `background_std`, per member and channel.
        max_fit_ratio: Bound on RMS((O−A)/σ_o) / max(1, RMS((O−B)/σ_o)).
    """
    if not torch.isfinite(analysis).all():
        return "the analysis is not finite"
    bad = sorted(key for key, value in diagnostics.items() if not np.isfinite(float(value)))
    if bad:
        return f"the method reports non-finite {', '.join(bad)}"
    with torch.no_grad():
        sigma = torch.as_tensor(background_std, dtype=torch.float64, device=analysis.device)[:, :, None]
        x_b = background.double()
        if x_b.shape[0] != analysis.shape[0]:
            x_b = x_b.mean(0, keepdim=True)
        rms = ((analysis.double() - x_b) / sigma).square().mean(dim=(-2, -1)).sqrt()  # (member, channel)
        largest = float(rms.max())
        if largest > max_increment:
            return (
                f"an increment of RMS {largest:.3g} background-error standard deviations "
                f"(bound {max_increment:g})"
            )
        used = observations.used
        if used is None:
            return None
        y, sigma_o = used.values.double(), used.error_std.double()
        fit_a = float(((y - used.operator(analysis.double()).mean(0)) / sigma_o).square().mean().sqrt())
        fit_b = float(((y - used.operator(background.double()).mean(0)) / sigma_o).square().mean().sqrt())
    if fit_a > max_fit_ratio * max(1.0, fit_b):
        return f"RMS (O−A)/σo {fit_a:.3g} against (O−B)/σo {fit_b:.3g} (bound {max_fit_ratio:g}×)"
    return None
