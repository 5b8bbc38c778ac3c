"""3D-Var with a control-variable transform, minimised by L-BFGS in torch.

With x = x_b + U v and B = U Uᵀ the cost is

    J(v) = ½ vᵀv + ½ (y − H(x_b + U v))ᵀ R⁻¹ (y − H(x_b + U v)),

well conditioned in v. Gradients (H's adjoint included) come from autograd. For a linear H
the minimum is the best linear unbiased estimate (BLUE). Members of an ensemble background
are analysed independently (the same observations for each).
"""

from __future__ import annotations

import torch
from torch import Tensor

from baselines.covariance import ControlTransform
from cycler_da.analysis import Analysis, Observations


class ThreeDVar:
    """3D-Var analysis.

    Args:
        transform: The control-variable transform U (B = U Uᵀ).
        max_iterations: L-BFGS iterations.
        tolerance: Stop when the gradient's largest component falls below this.
        history: L-BFGS memory.
    """

    def __init__(self, transform: ControlTransform, max_iterations: int = 100, tolerance: float = 1e-6,
                 history: int = 20):  # fmt: skip
        self.transform = transform
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.history = history

    def analyse(self, background: Tensor, observations: Observations, *,
                generator: torch.Generator | None = None) -> Analysis:  # fmt: skip
        dtype = self.transform.sigma.dtype
        x_b = background.to(dtype)
        y = observations.values.to(dtype)
        inv_r = observations.error_std.to(dtype).pow(-2)
        v = torch.zeros(
            x_b.shape[0], *self.transform.shape, dtype=dtype, device=x_b.device, requires_grad=True
        )
        optimiser = torch.optim.LBFGS([v], lr=1, max_iter=self.max_iterations, history_size=self.history,
                                      tolerance_grad=self.tolerance, tolerance_change=1e-12,
                                      line_search_fn="strong_wolfe")  # fmt: skip
        evaluations = 0

        def cost() -> Tensor:
            nonlocal evaluations
            evaluations += 1
            optimiser.zero_grad()
            departure = y - observations.operator(x_b + self.transform(v))
            j = 0.5 * v.pow(2).sum() + 0.5 * (departure.pow(2) * inv_r).sum()
            j.backward()
            return j

        with torch.enable_grad():
            j0 = float(cost().detach())
            optimiser.step(cost)
            with torch.no_grad():
                x_a = x_b + self.transform(v)
                j_final = 0.5 * v.pow(2).sum() + 0.5 * ((y - observations.operator(x_a)).pow(2) * inv_r).sum()
        state = optimiser.state[optimiser._params[0]]
        return Analysis(
            x_a.to(background.dtype).detach(),
            {
                "cost_initial": j0,
                "cost_final": float(j_final),
                "iterations": float(state.get("n_iter", 0)),
                "evaluations": float(evaluations),
            },
        )
