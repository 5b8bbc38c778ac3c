"""Registers the classical methods: ``none`` (free run), ``3dvar`` and ``enkf`` (LETKF)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from baselines.covariance import (
    BackgroundErrorStats,
    ControlTransform,
    EnsembleControlTransform,
    neighbourhood_channel_coupling,
    optimal_localization,
)
from baselines.hybrid import EnVarLETKF, HybridGainLETKF
from baselines.letkf import LETKF
from baselines.var3d import ThreeDVar
from cycler_da.analysis import Analysis, MethodContext, Observations, register


class FreeRun:
    """No analysis: the background goes on unchanged (a free forecast run)."""

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
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
    return ControlTransform(
        _background_error(context),
        context.latitudes,
        context.longitudes,
        scale,
        length_scale_km,
        device=context.device,
    )


# The ensemble B's localisation: the 3dvar default, and the hybrid-gain LETKF's 3D-Var.
LOCALIZATION_KM = 1500.0


def _ensemble_transform(
    context: MethodContext, scale: float, localization_km: float, what: str
) -> EnsembleControlTransform:
    return EnsembleControlTransform(
        context.error_samples(what),
        context.latitudes,
        context.longitudes,
        localization_km,
        scale,
        device=context.device,
    )


@register("3dvar")
def _3dvar(
    context: MethodContext,
    covariance: str = "ensemble",
    b_scale: float = 1.5,
    localization_km: float = LOCALIZATION_KM,
    length_scale_km: float | None = None,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    adaptive_variance: bool = False,
    min_observations: int = 10,
) -> ThreeDVar:
    # covariance "ensemble": B = (X Xᵀ/(N−1)) ∘ L from 240 training-set 24-h forecast errors X,
    # localised by a Gaussian of localization_km; "gaussian": per-point channel correlations
    # times one Gaussian horizontal correlation of length_scale_km (default: fitted). The
    # ensemble B keeps cross-channel covariances between places (height-wind balance) and was
    # 23 % better in z500 over 10-day cycles at 5 % observations; the defaults (b_scale 1.5,
    # localisation 1500 km) come from benchmarks/tune_baselines.py.
    # adaptive_variance: per-channel B variances from each window's innovations (b_scale then
    # applies only to channels with fewer than min_observations observations).
    if covariance == "ensemble":
        if length_scale_km is not None:
            raise ValueError(
                "length_scale_km applies to covariance 'gaussian'; the ensemble B uses localization_km"
            )
        transform = _ensemble_transform(context, b_scale, localization_km, "covariance 'ensemble'")
    elif covariance == "gaussian":
        transform = _transform(context, b_scale, length_scale_km)
    else:
        raise ValueError(f"covariance must be 'ensemble' or 'gaussian'; got {covariance!r}")
    return ThreeDVar(
        transform,
        max_iterations,
        tolerance,
        adaptive_variance=adaptive_variance,
        min_observations=min_observations,
    )


CHANNEL_LOCALIZATIONS = ("none", "correlation", "neighbourhood", "optimal")


@register("enkf")
def _enkf(
    context: MethodContext,
    localization_km: float | None = 1500.0,
    inflation: float = 1.0,
    rtps: float = 0.1,
    additive: float = 0.5,
    channel_localization: str = "neighbourhood",
    adaptive_inflation: bool = False,
    max_inflation: float = 3.0,
    additive_covariance: str = "samples",
    hybrid_weight: float = 0.0,
    hybrid_b_scale: float = 1.0,
    envar_weight: float = 0.0,
    channel_localization_km: float = 1250.0,
) -> LETKF | HybridGainLETKF | EnVarLETKF:
    # Defaults from benchmarks/tune_baselines.py (5 % columns, 40 members, the two-frame emulator;
    # results-tune_baselines.txt). Channel localisation by displaced correlations
    # ("neighbourhood") was the largest gain: 10-day z500 117.2 -> 103.8 against the point
    # correlation. Over 30 days, additive 0.4 with RTPS 0.5 (the 10-day best) let z500 grow from
    # 95 to 123 by 3-day blocks; additive 0.5 with RTPS 0.1 stays flat (z500 95.9, 3D-Var 96.4),
    # spread/skill 0.82-0.93. Adaptive inflation put the spread in band but drifted over 30 days
    # (z500 192.5, one-frame emulator), so it stays off.
    # additive: standard deviation of the additive inflation as a fraction of B's (the 24-h
    # forecast-error statistics 3D-Var uses, at b_scale 1); 0 switches it off.
    # additive_covariance "gaussian": draws from the Gaussian B; "samples": random combinations
    # Σ_k w_k X_k / √(N−1), w ~ N(0, I), of the training-set error samples X — draws from
    # their sample covariance, so balanced like real forecast errors (Whitaker et al. 2008).
    if additive < 0:
        raise ValueError(f"additive must be >= 0; got {additive}")
    if additive_covariance not in ("gaussian", "samples"):
        raise ValueError(f"additive_covariance must be 'gaussian' or 'samples'; got {additive_covariance!r}")
    sampler = None
    if additive > 0 and additive_covariance == "samples":
        errors = context.error_samples("additive_covariance 'samples'")
        errors = torch.as_tensor(errors - errors.mean(axis=0, keepdims=True), device=context.device)
        scaled = additive / np.sqrt(errors.shape[0] - 1) * errors.reshape(errors.shape[0], -1)

        def sampler(members: int, generator: torch.Generator | None) -> Tensor:
            w = torch.randn(
                (members, scaled.shape[0]), generator=generator, dtype=scaled.dtype, device=scaled.device
            )
            return (w @ scaled).reshape(members, *errors.shape[1:])

    elif additive > 0:
        transform = _transform(context, additive)

        def sampler(members: int, generator: torch.Generator | None) -> Tensor:
            v = torch.randn(
                (members, *transform.shape),
                generator=generator,
                dtype=transform.sigma.dtype,
                device=transform.sigma.device,
            )
            return transform(v)

    # channel_localization "correlation": channel c weights observations of channel c' by
    # |corr(c, c')| of B at one point, so cross-channel updates the climatology hardly supports
    # (and 40 members estimate mostly as noise) are damped; "neighbourhood": by the largest RMS
    # correlation of the training-set errors of c and c' displaced by up to
    # channel_localization_km, which keeps height-wind balance (0.00-0.01 at a point, ~0.4
    # displaced); "none": one set of weights per column.
    if channel_localization not in CHANNEL_LOCALIZATIONS:
        raise ValueError(
            f"channel_localization must be one of {', '.join(map(repr, CHANNEL_LOCALIZATIONS))}; "
            f"got {channel_localization!r}"
        )
    factors = None  # "none"
    if channel_localization == "correlation":
        factors = torch.as_tensor(np.abs(_background_error(context).channel_correlation))
    elif channel_localization in ("neighbourhood", "optimal"):
        errors = context.error_samples(f"channel_localization {channel_localization!r}")
        rho = neighbourhood_channel_coupling(
            errors, context.latitudes, context.longitudes, channel_localization_km
        )
        if channel_localization == "optimal":
            rho = optimal_localization(rho, context.members)
        factors = torch.as_tensor(rho)
    # adaptive_inflation: per-channel multiplicative inflation from each window's innovations
    # (between 1 and max_inflation), on top of `inflation`.
    letkf = LETKF(
        context.latitudes,
        context.longitudes,
        localization_km,
        inflation,
        rtps,
        sampler,
        factors,
        adaptive_inflation=adaptive_inflation,
        max_inflation=max_inflation,
    )
    # hybrid_weight β > 0: the hybrid-gain LETKF (Penny 2014). A 3D-Var with the ensemble B
    # (scaled by hybrid_b_scale, localised like the 3dvar default) refines the LETKF mean, and
    # the members are recentred on x̄_E + β (x_V − x̄_E).
    # envar_weight α > 0: the hybrid 3DEnVar. One 3D-Var of the background mean with
    # B_h = (1 − α) B + α (P_e ∘ L) (B scaled by hybrid_b_scale, P_e this window's background
    # members, both localised like the 3dvar default) gives the mean; the members are the
    # LETKF's perturbations recentred on it. 10-day cycles at 5 % (tune_baselines 37-39, with
    # hybrid_b_scale 1.5): α 0.3 / 0.5 / 0.75 gave z500 101.1 / 104.1 / 113.9, the 3dvar default 110.3;
    # over 30 days (cycle_baselines "envar", α 0.3) 110.4 against 110.9, spread/skill 0.77-1.17.
    if not 0 <= hybrid_weight <= 1:
        raise ValueError(f"hybrid_weight must be in [0, 1]; got {hybrid_weight}")
    if not 0 <= envar_weight <= 1:
        raise ValueError(f"envar_weight must be in [0, 1]; got {envar_weight}")
    if hybrid_weight > 0 and envar_weight > 0:
        raise ValueError(
            "hybrid_weight (hybrid gain) and envar_weight (hybrid covariance) exclude each other"
        )
    if hybrid_weight == 0 and envar_weight == 0:
        return letkf
    what = "hybrid_weight > 0" if hybrid_weight > 0 else "envar_weight > 0"
    var = ThreeDVar(_ensemble_transform(context, hybrid_b_scale, LOCALIZATION_KM, what))
    if envar_weight > 0:
        return EnVarLETKF(letkf, var, envar_weight)
    return HybridGainLETKF(letkf, var, hybrid_weight)
