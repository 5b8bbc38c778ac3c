"""The method ``envar``: the hybrid 3DEnVar of operational centres (Wang et al. 2013).

The mean comes from one 3D-Var of the background mean with

    B_h = (1 − α) B + α (P_e ∘ L),

the static B (training-set errors, × ``hybrid_b_scale``, localised like the 3dvar default)
blended with the localised covariance P_e of this window's background members, so the
observations are used once and the flow-dependent covariance enters the variational solve.
The members are the LETKF's perturbations (all of ``enkf``'s parameters apply) recentred on
that mean.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from baselines import enkf
from baselines.letkf import LETKF, recentre
from cycler_da.core import Analysis, MethodContext, MethodSpec, Observations
from cycler_da.core.covariance import ENSEMBLE_LOCALIZATION_KM, EnsembleControlTransform, ensemble_transform
from cycler_da.core.var3d import ThreeDVar


@dataclass(frozen=True)
class EnVarParams(enkf.LETKFParams):
    """Parameters of ``envar``: the LETKF's, and the blend."""

    envar_weight: float = 0.3
    """α in [0, 1], the ensemble covariance's share of B_h (0: a 3D-Var mean with the static B)."""
    hybrid_b_scale: float = 1.5
    """Factor on the static B's standard deviations."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.envar_weight <= 1:
            raise ValueError(f"envar_weight must be in [0, 1]; got {self.envar_weight}")


class EnVarLETKF:
    """LETKF perturbations recentred on a hybrid-covariance 3D-Var (3DEnVar) mean.

    Args:
        letkf: The ensemble analysis that gives the perturbations.
        var: The 3D-Var whose (ensemble-sample) transform is the static B; each window it runs
            with that B blended with the background ensemble's.
        weight: α in [0, 1], the ensemble covariance's share of B_h.
    """

    def __init__(self, letkf: LETKF, var: ThreeDVar, weight: float):
        if not isinstance(var.transform, EnsembleControlTransform):
            raise TypeError("the 3DEnVar needs a 3D-Var with an ensemble-sample B (EnsembleControlTransform)")
        self.letkf, self.var, self.weight = letkf, var, weight

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        ensemble = self.letkf.analyse(background, observations, generator=generator)
        var = copy.copy(self.var)  # this window's B_h; self.var keeps the static B
        var.transform = self.var.transform.hybrid(background, self.weight)
        refined = var.analyse(background.mean(dim=0, keepdim=True), observations)
        return recentre(ensemble, refined.state.to(torch.float64), refined, background.dtype)


def build(context: MethodContext, params: EnVarParams) -> EnVarLETKF:
    static = ensemble_transform(context, params.hybrid_b_scale, ENSEMBLE_LOCALIZATION_KM, "envar")
    return EnVarLETKF(enkf.build(context, params), ThreeDVar(static), params.envar_weight)


METHOD = MethodSpec("envar", EnVarParams, build, members=40)
