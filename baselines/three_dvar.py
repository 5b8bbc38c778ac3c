"""The method ``3dvar``: 3D-Var with a static B from the training-set 24-h forecast errors.

The solver is :class:`cycler_da.core.var3d.ThreeDVar`; this file chooses its B:

* ``covariance: ensemble`` (default): B = b_scale² (X Xᵀ/(N−1)) ∘ L, the sample covariance of
  the training-set errors X localised by a Gaussian of ``localization_km``. It keeps the
  covariances between channels at different places (height–wind balance).
* ``covariance: gaussian``: the separable model, per-point channel correlations times one
  Gaussian horizontal correlation of ``length_scale_km`` (fitted to the errors by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from cycler_da.core import MethodContext, MethodSpec
from cycler_da.core.covariance import ENSEMBLE_LOCALIZATION_KM, ensemble_transform, static_transform
from cycler_da.core.var3d import ThreeDVar

COVARIANCES = ("ensemble", "gaussian")


@dataclass(frozen=True)
class ThreeDVarParams:
    """Parameters of ``3dvar``."""

    covariance: str = "ensemble"
    """B model: "ensemble" (localised training-set errors) or "gaussian" (separable)."""
    b_scale: float = 1.5
    """Factor on B's standard deviations."""
    localization_km: float = ENSEMBLE_LOCALIZATION_KM
    """Length of the ensemble B's Gaussian localisation."""
    length_scale_km: float | None = None
    """The Gaussian B's horizontal correlation length (None: fitted to the errors)."""
    max_iterations: int = 100
    """L-BFGS iterations."""
    tolerance: float = 1e-6
    """Stop when the gradient's largest component falls below this."""
    adaptive_variance: bool = False
    """Rescale each channel's B variances to the window's innovations (E[d²] = σ_o² + HBHᵀ)."""
    min_observations: int = 10
    """With adaptive_variance, channels with fewer observations keep b_scale."""

    def __post_init__(self) -> None:
        if self.covariance not in COVARIANCES:
            raise ValueError(f"covariance must be 'ensemble' or 'gaussian'; got {self.covariance!r}")
        if self.covariance == "ensemble" and self.length_scale_km is not None:
            raise ValueError(
                "length_scale_km applies to covariance 'gaussian'; the ensemble B uses localization_km"
            )


def build(context: MethodContext, params: ThreeDVarParams) -> ThreeDVar:
    if params.covariance == "ensemble":
        transform = ensemble_transform(
            context, params.b_scale, params.localization_km, "covariance 'ensemble'"
        )
    else:
        transform = static_transform(context, params.b_scale, params.length_scale_km)
    return ThreeDVar(
        transform,
        params.max_iterations,
        params.tolerance,
        adaptive_variance=params.adaptive_variance,
        min_observations=params.min_observations,
    )


METHOD = MethodSpec("3dvar", ThreeDVarParams, build)
