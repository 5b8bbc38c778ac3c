"""The method ``enkf``: the LETKF, its inflation and channel localisation drawn from the training-set errors.

The analysis itself is :class:`baselines.letkf.LETKF`; this file builds its additive
inflation and channel localisation from the run's training-set errors.

Additive inflation stands in for the neural model's error, which the ensemble cannot
represent: ``additive_covariance: samples`` draws Σ_k w_k X_k / √(N−1), w ~ N(0, I), from the
training-set error samples X (draws from their sample covariance, so balanced like real
forecast errors; Whitaker et al. 2008), ``gaussian`` from the separable B.

Channel localisation damps cross-channel updates that 40 members estimate mostly as noise:
``neighbourhood`` weighs observations of channel c' in the analysis of channel c by the
largest RMS correlation of the training-set errors of c and c' displaced by up to
``channel_localization_km``, which keeps height–wind balance (geostrophic height and wind
errors are uncorrelated at a point but correlated a quarter wavelength apart);
``correlation`` by |corr(c, c')| at one point; ``optimal`` by Ménétrier et al.'s
sampling-optimal factor of the displaced correlations; ``none`` gives every channel of a
column one set of weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from baselines.letkf import LETKF
from cycler_da.core import MethodContext, MethodSpec
from cycler_da.core.covariance import (
    error_statistics,
    neighbourhood_channel_coupling,
    optimal_localization,
    static_transform,
)

CHANNEL_LOCALIZATIONS = ("none", "correlation", "neighbourhood", "optimal")
ADDITIVE_COVARIANCES = ("gaussian", "samples")


@dataclass(frozen=True)
class LETKFParams:
    """Parameters of ``enkf`` (and of the LETKF inside ``envar`` and ``hybrid-gain``)."""

    localization_km: float | None = 1500.0
    """Gaspari–Cohn half-width (weights vanish beyond twice this); None: no localisation."""
    inflation: float = 1.0
    """Multiplicative prior inflation factor (1: none)."""
    rtps: float = 0.1
    """Relaxation to prior spread α in [0, 1] (0: none)."""
    additive: float = 0.5
    """Standard deviation of the additive inflation as a fraction of B's (0: none)."""
    channel_localization: str = "neighbourhood"
    """How channel c weighs observations of channel c': one of CHANNEL_LOCALIZATIONS."""
    adaptive_inflation: bool = False
    """Per-channel multiplicative inflation from each window's innovations, on top of `inflation`."""
    max_inflation: float = 3.0
    """Upper bound of the adaptive factor."""
    additive_covariance: str = "samples"
    """Additive draws from the training-set error "samples" or the "gaussian" B."""
    channel_localization_km: float = 1250.0
    """Largest displacement of the "neighbourhood" and "optimal" channel correlations."""

    def __post_init__(self) -> None:
        if self.inflation < 1 or not 0 <= self.rtps <= 1:
            raise ValueError(f"inflation must be >= 1 and rtps in [0, 1]; got {self.inflation}, {self.rtps}")
        if self.additive < 0:
            raise ValueError(f"additive must be >= 0; got {self.additive}")
        if self.additive_covariance not in ADDITIVE_COVARIANCES:
            raise ValueError(
                f"additive_covariance must be 'gaussian' or 'samples'; got {self.additive_covariance!r}"
            )
        if self.channel_localization not in CHANNEL_LOCALIZATIONS:
            raise ValueError(
                f"channel_localization must be one of {', '.join(map(repr, CHANNEL_LOCALIZATIONS))}; "
                f"got {self.channel_localization!r}"
            )


Sampler = Callable[[int, torch.Generator | None], Tensor]


def additive_sampler(context: MethodContext, params: LETKFParams) -> Sampler | None:
    """``sample(members, generator)``: the additive-inflation draws, or None without them."""
    if params.additive == 0:
        return None
    if params.additive_covariance == "samples":
        errors = context.error_samples("additive_covariance 'samples'")
        errors = torch.as_tensor(errors - errors.mean(axis=0, keepdims=True), device=context.device)
        scaled = params.additive / np.sqrt(errors.shape[0] - 1) * errors.reshape(errors.shape[0], -1)

        def from_samples(members: int, generator: torch.Generator | None) -> Tensor:
            w = torch.randn(
                (members, scaled.shape[0]), generator=generator, dtype=scaled.dtype, device=scaled.device
            )
            return (w @ scaled).reshape(members, *errors.shape[1:])

        return from_samples
    transform = static_transform(context, params.additive)

    def from_gaussian(members: int, generator: torch.Generator | None) -> Tensor:
        v = torch.randn(
            (members, *transform.shape),
            generator=generator,
            dtype=transform.sigma.dtype,
            device=transform.sigma.device,
        )
        return transform(v)

    return from_gaussian


def channel_factors(context: MethodContext, params: LETKFParams) -> Tensor | None:
    """The (channel, channel) localisation factors, or None for ``none``."""
    kind = params.channel_localization
    if kind == "none":
        return None
    if kind == "correlation":
        return torch.as_tensor(np.abs(error_statistics(context).channel_correlation))
    errors = context.error_samples(f"channel_localization {kind!r}")
    rho = neighbourhood_channel_coupling(
        errors, context.latitudes, context.longitudes, params.channel_localization_km
    )
    if kind == "optimal":
        rho = optimal_localization(rho, context.members)
    return torch.as_tensor(rho)


def build(context: MethodContext, params: LETKFParams) -> LETKF:
    return LETKF(
        context.latitudes,
        context.longitudes,
        params.localization_km,
        params.inflation,
        params.rtps,
        additive_sampler(context, params),
        channel_factors(context, params),
        adaptive_inflation=params.adaptive_inflation,
        max_inflation=params.max_inflation,
    )


METHOD = MethodSpec("enkf", LETKFParams, build, members=40)
