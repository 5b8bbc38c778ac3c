"""The method ``hybrid-gain``: the hybrid-gain LETKF (Penny 2014).

The LETKF analyses the ensemble (all of ``enkf``'s parameters apply); its analysis mean x̄_E
is the background of a 3D-Var with the same observations and the static B (training-set
errors, × ``hybrid_b_scale``, localised like the 3dvar default), giving x_V. The members are
recentred on

    x̄_a = x̄_E + β (x_V − x̄_E),

so the gain is K = K_E + β K_B (I − H K_E): the flow-dependent ensemble gain plus a share of
the static one for the part of the innovation the ensemble left. The perturbations are the
LETKF's, after its inflation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from baselines import enkf
from baselines.letkf import LETKF, recentre
from cycler_da.core import Analysis, MethodContext, MethodSpec, Observations
from cycler_da.core.covariance import ENSEMBLE_LOCALIZATION_KM, ensemble_transform
from cycler_da.core.var3d import ThreeDVar


@dataclass(frozen=True)
class HybridGainParams(enkf.LETKFParams):
    """Parameters of ``hybrid-gain``: the LETKF's, and the blend."""

    hybrid_weight: float = 1.0
    """β in [0, 1]: 0 is the plain LETKF, 1 takes the 3D-Var's mean."""
    hybrid_b_scale: float = 1.0
    """Factor on the static B's standard deviations."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.hybrid_weight <= 1:
            raise ValueError(f"hybrid_weight must be in [0, 1]; got {self.hybrid_weight}")


class HybridGainLETKF:
    """LETKF members recentred on a weighted LETKF / 3D-Var mean.

    Args:
        letkf: The ensemble analysis.
        var: The 3D-Var that takes the LETKF mean as its background.
        weight: β in [0, 1].
    """

    def __init__(self, letkf: LETKF, var: ThreeDVar, weight: float):
        self.letkf, self.var, self.weight = letkf, var, weight

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        ensemble = self.letkf.analyse(background, observations, generator=generator)
        mean = ensemble.state.to(torch.float64).mean(dim=0, keepdim=True)
        refined = self.var.analyse(mean, observations)
        target = mean + self.weight * (refined.state.to(torch.float64) - mean)
        return recentre(ensemble, target, refined, background.dtype)


def build(context: MethodContext, params: HybridGainParams) -> HybridGainLETKF:
    static = ensemble_transform(context, params.hybrid_b_scale, ENSEMBLE_LOCALIZATION_KM, "hybrid-gain")
    return HybridGainLETKF(enkf.build(context, params), ThreeDVar(static), params.hybrid_weight)


METHOD = MethodSpec("hybrid-gain", HybridGainParams, build, members=40)
