"""Registers the classical methods: ``none`` (free run), ``3dvar`` and ``enkf`` (LETKF)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from baselines.covariance import BackgroundErrorStats, ControlTransform
from baselines.letkf import LETKF
from baselines.var3d import ThreeDVar
from cycler_da.analysis import Analysis, MethodContext, Observations, register


class FreeRun:
    """No analysis: the background goes on unchanged (a free forecast run)."""

    def analyse(self, background: Tensor, observations: Observations, *,
                generator: torch.Generator | None = None) -> Analysis:  # fmt: skip
        return Analysis(background, {})


@register("none")
def _none(context: MethodContext) -> FreeRun:
    return FreeRun()


def _background_error(context: MethodContext) -> BackgroundErrorStats:
    if context.background_error is None:
        raise ValueError("this method needs background-error statistics (context.background_error)")
    stats = context.background_error
    return BackgroundErrorStats.from_dict(stats) if isinstance(stats, dict) else stats


def _transform(
    context: MethodContext, scale: float, length_scale_km: float | None = None
) -> ControlTransform:
    return ControlTransform(_background_error(context), context.latitudes, context.longitudes, scale,
                            length_scale_km, device=context.device)  # fmt: skip


@register("3dvar")
def _3dvar(context: MethodContext, b_scale: float = 2.5, length_scale_km: float | None = None,
           max_iterations: int = 100, tolerance: float = 1e-6, adaptive_variance: bool = False,
           min_observations: int = 10) -> ThreeDVar:  # fmt: skip
    # b_scale 2.5: the best of 1, 1.5, 2.5 and 4 in 10-day cycles at 5 % observations (z500
    # analysis RMSE over days 5-10: 521, 316, 239, 243 m² s⁻²); B comes from 24-h forecast errors.
    # adaptive_variance: per-channel B variances from each window's innovations (b_scale then
    # applies only to channels with fewer than min_observations observations).
    return ThreeDVar(_transform(context, b_scale, length_scale_km), max_iterations, tolerance,
                     adaptive_variance=adaptive_variance, min_observations=min_observations)  # fmt: skip


@register("enkf")
def _enkf(context: MethodContext, localization_km: float | None = 1500.0, inflation: float = 1.0,
          rtps: float = 0.5, additive: float = 0.2, channel_localization: str = "correlation",
          adaptive_inflation: bool = False, max_inflation: float = 3.0) -> LETKF:  # fmt: skip
    # Defaults from benchmarks/tune_baselines.py (10-day cycles, 5 % columns, 40 members): without
    # additive inflation and channel localisation the spread collapsed (spread/skill 0.1) and
    # the analysis was 2-3 × worse than 3D-Var; with them it beats 3D-Var.
    # additive: standard deviation of the additive inflation as a fraction of B's (the 24-h
    # forecast-error statistics 3D-Var uses, at b_scale 1); 0 switches it off.
    if additive < 0:
        raise ValueError(f"additive must be >= 0; got {additive}")
    sampler = None
    if additive > 0:
        transform = _transform(context, additive)

        def sampler(members: int, generator: torch.Generator | None) -> Tensor:
            v = torch.randn((members, *transform.shape), generator=generator, dtype=transform.sigma.dtype,
                            device=transform.sigma.device)  # fmt: skip
            return transform(v)

    # channel_localization "correlation": channel c weights observations of channel c' by
    # |corr(c, c')| of B, so cross-channel updates the climatology hardly supports (and 20
    # members estimate mostly as noise) are damped; "none": one set of weights per column.
    if channel_localization not in ("none", "correlation"):
        raise ValueError(
            f"channel_localization must be 'none' or 'correlation'; got {channel_localization!r}"
        )
    factors = None
    if channel_localization == "correlation":
        factors = torch.as_tensor(np.abs(_background_error(context).channel_correlation))
    # adaptive_inflation: per-channel multiplicative inflation from each window's innovations
    # (between 1 and max_inflation), on top of `inflation`.
    return LETKF(context.latitudes, context.longitudes, localization_km, inflation, rtps, sampler, factors,
                 adaptive_inflation=adaptive_inflation, max_inflation=max_inflation)  # fmt: skip
