"""Hybrid-gain LETKF (Penny 2014): a 3D-Var with a static B refines the LETKF's analysis mean.

The LETKF analyses the ensemble; its analysis mean x̄_E is then the background of a 3D-Var
with the same observations, giving x_V. The members are recentred on

    x̄_a = x̄_E + β (x_V − x̄_E),

so the gain is K = K_E + β K_B (I − H K_E): the flow-dependent ensemble gain plus a share of
the static one for the part of the innovation the ensemble left. The perturbations are the
LETKF's (after its inflation), as in operational hybrid systems that recentre an EnKF on a
hybrid mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

from baselines.letkf import LETKF
from baselines.var3d import ThreeDVar
from cycler_da.analysis import Analysis, Observations


class HybridGainLETKF:
    """LETKF members recentred on a weighted LETKF / 3D-Var mean.

    Args:
        letkf: The ensemble analysis.
        var: The 3D-Var that takes the LETKF mean as its background.
        weight: β in [0, 1]; 0 is the plain LETKF, 1 takes the 3D-Var's mean.
    """

    def __init__(self, letkf: LETKF, var: ThreeDVar, weight: float):
        if not 0 <= weight <= 1:
            raise ValueError(f"the hybrid weight must be in [0, 1]; got {weight}")
        self.letkf = letkf
        self.var = var
        self.weight = weight

    def analyse(self, background: Tensor, observations: Observations, *,
                generator: torch.Generator | None = None) -> Analysis:  # fmt: skip
        ensemble = self.letkf.analyse(background, observations, generator=generator)
        members = ensemble.state.to(torch.float64)
        mean = members.mean(dim=0, keepdim=True)
        refined = self.var.analyse(mean, observations)
        shift = self.weight * (refined.state.to(torch.float64) - mean)
        diagnostics = dict(ensemble.diagnostics)
        diagnostics.update({f"var_{key}": value for key, value in refined.diagnostics.items()})
        return Analysis((members + shift).to(background.dtype), diagnostics)
