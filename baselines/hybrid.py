"""Hybrids of the LETKF with 3D-Var: the LETKF's perturbations recentred on a variational mean.

``HybridGainLETKF`` (Penny 2014): a 3D-Var with a static B refines the LETKF's analysis mean.

The LETKF analyses the ensemble; its analysis mean x̄_E is then the background of a 3D-Var
with the same observations, giving x_V. The members are recentred on

    x̄_a = x̄_E + β (x_V − x̄_E),

so the gain is K = K_E + β K_B (I − H K_E): the flow-dependent ensemble gain plus a share of
the static one for the part of the innovation the ensemble left. The perturbations are the
LETKF's (after its inflation), as in operational hybrid systems that recentre an EnKF on a
hybrid mean.

``EnVarLETKF`` (the hybrid 3DEnVar of NCEP's GFS, Wang et al. 2013): the mean comes from one
3D-Var of the background mean with B_h = (1 − α) B + α (P_e ∘ L), the static B blended with
the localised covariance of this window's background members, so the observations are used
once and the flow-dependent covariance enters the variational solve; the members are the
LETKF's perturbations recentred on that mean.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from baselines.covariance import EnsembleControlTransform
from baselines.letkf import LETKF
from baselines.var3d import ThreeDVar
from cycler_da.analysis import Analysis, Observations


def _check_weight(weight: float, what: str) -> None:
    if not 0 <= weight <= 1:
        raise ValueError(f"the {what} must be in [0, 1]; got {weight}")


def _recentred(ensemble: Analysis, mean: Tensor, refined: Analysis, dtype: torch.dtype) -> Analysis:
    """The ensemble's perturbations about `mean`, with the 3D-Var's diagnostics beside the LETKF's."""
    members = ensemble.state.to(torch.float64)
    state = members - members.mean(dim=0, keepdim=True) + mean
    diagnostics = dict(ensemble.diagnostics)
    diagnostics.update({f"var_{key}": value for key, value in refined.diagnostics.items()})
    return Analysis(state.to(dtype), diagnostics)


class HybridGainLETKF:
    """LETKF members recentred on a weighted LETKF / 3D-Var mean.

    Args:
        letkf: The ensemble analysis.
        var: The 3D-Var that takes the LETKF mean as its background.
        weight: β in [0, 1]; 0 is the plain LETKF, 1 takes the 3D-Var's mean.
    """

    def __init__(self, letkf: LETKF, var: ThreeDVar, weight: float):
        _check_weight(weight, "hybrid weight")
        self.letkf, self.var, self.weight = letkf, var, weight

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        ensemble = self.letkf.analyse(background, observations, generator=generator)
        mean = ensemble.state.to(torch.float64).mean(dim=0, keepdim=True)
        refined = self.var.analyse(mean, observations)
        target = mean + self.weight * (refined.state.to(torch.float64) - mean)
        return _recentred(ensemble, target, refined, background.dtype)


class EnVarLETKF:
    """LETKF perturbations recentred on a hybrid-covariance 3D-Var (3DEnVar) mean.

    Args:
        letkf: The ensemble analysis that gives the perturbations.
        var: The 3D-Var whose (ensemble-sample) transform is the static B; each window it runs
            with that B blended with the background ensemble's.
        weight: α in [0, 1], the ensemble covariance's share of B_h; 0 is a 3D-Var mean.
    """

    def __init__(self, letkf: LETKF, var: ThreeDVar, weight: float):
        if not isinstance(var.transform, EnsembleControlTransform):
            raise TypeError("the 3DEnVar needs a 3D-Var with an ensemble-sample B (EnsembleControlTransform)")
        _check_weight(weight, "ensemble covariance weight")
        self.letkf, self.var, self.weight = letkf, var, weight

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        ensemble = self.letkf.analyse(background, observations, generator=generator)
        var = copy.copy(self.var)  # this window's B_h; self.var keeps the static B
        var.transform = self.var.transform.hybrid(background, self.weight)
        refined = var.analyse(background.mean(dim=0, keepdim=True), observations)
        return _recentred(ensemble, refined.state.to(torch.float64), refined, background.dtype)
