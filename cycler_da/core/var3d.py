"""3D-Var with a control-variable transform, minimised by L-BFGS in torch.

With x = x_b + U v and B = U Uᵀ the cost is

    J(v) = ½ vᵀv + ½ (y − H(x_b + U v))ᵀ R⁻¹ (y − H(x_b + U v)),

well conditioned in v. Gradients (H's adjoint included) come from autograd. For a linear H
the minimum is the best linear unbiased estimate (BLUE). Members of an ensemble background
are analysed independently (the same observations for each).

With ``adaptive_variance`` each channel's background-error standard deviations are rescaled,
window by window, so that B agrees with that window's innovations d = y − H(x_b): since
E[d²] = σ_o² + (HBHᵀ)_ii (Desroziers et al. 2005), the variance factor of channel c is
Σ(d² − σ_o²) / Σ(HBHᵀ)_ii over its observations. A static B tuned for one error level
underweights the observations once cycling errors grow past it (and channels mis-scaled
relative to each other stay so); the factor uses only the current window, so a resumed run
is identical to an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cycler_da.core.contract import Analysis, Observations
from cycler_da.core.covariance import ControlTransform, EnsembleControlTransform, innovation_variance_ratio


class ThreeDVar:
    """3D-Var analysis.

    Args:
        transform: The control-variable transform U (B = U Uᵀ).
        max_iterations: L-BFGS iterations.
        tolerance: Stop when the gradient's largest component falls below this.
        history: L-BFGS memory.
        adaptive_variance: Rescale each channel's B variances to this window's innovations.
        min_observations: Channels with fewer observations keep the transform's variances.
        variance_bounds: Bounds of the adaptive variance factor.
    """

    def __init__(
        self,
        transform: ControlTransform | EnsembleControlTransform,
        max_iterations: int = 100,
        tolerance: float = 1e-6,
        history: int = 20,
        adaptive_variance: bool = False,
        min_observations: int = 10,
        variance_bounds: tuple[float, float] = (1 / 16, 16.0),
    ):
        self.transform = transform
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.history = history
        self.adaptive_variance = adaptive_variance
        self.min_observations = min_observations
        self.variance_bounds = variance_bounds

    def variance_factors(self, background: Tensor, observations: Observations) -> Tensor:
        """Per-channel factors of B's variances from the innovations, shape (channel,).

        H is applied to channel indicator fields and to diag(B), so any linear H (points,
        averages, interpolation) gives each observation's channel weights and modelled
        background variance without knowing its internals.
        """
        dtype = self.transform.sigma.dtype
        channels = self.transform.sigma.shape[0]
        grid = (self.transform.nlat, self.transform.nlon)
        indicators = torch.eye(channels, dtype=dtype, device=background.device)[:, :, None, None]
        variance = self.transform.sigma.pow(2).reshape(1, channels, *grid)
        fields = torch.cat([indicators.expand(-1, -1, *grid), variance])
        with torch.no_grad():
            mapped = observations.operator(fields)
            departure = (
                observations.values.to(dtype)
                - observations.operator(background.to(dtype).mean(0, keepdim=True))[0]
            )
        return innovation_variance_ratio(
            departure,
            observations.error_std,
            mapped[channels],
            mapped[:channels],
            self.variance_bounds,
            self.min_observations,
        )

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        dtype = self.transform.sigma.dtype
        x_b = background.to(dtype)
        y = observations.values.to(dtype)
        inv_r = observations.error_std.to(dtype).pow(-2)
        v = torch.zeros(
            x_b.shape[0], *self.transform.shape, dtype=dtype, device=x_b.device, requires_grad=True
        )
        optimiser = torch.optim.LBFGS(
            [v],
            lr=1,
            max_iter=self.max_iterations,
            history_size=self.history,
            tolerance_grad=self.tolerance,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )
        evaluations = 0
        factors = torch.ones(self.transform.sigma.shape[0], dtype=dtype, device=x_b.device)
        if self.adaptive_variance:
            factors = self.variance_factors(x_b, observations)
        std_factor = factors.sqrt()[:, None, None]

        def increment(v: Tensor) -> Tensor:
            return std_factor * self.transform(v)

        def cost() -> Tensor:
            nonlocal evaluations
            evaluations += 1
            optimiser.zero_grad()
            departure = y - observations.operator(x_b + increment(v))
            j = 0.5 * v.pow(2).sum() + 0.5 * (departure.pow(2) * inv_r).sum()
            j.backward()
            return j

        with torch.enable_grad():
            j0 = float(cost().detach())
            optimiser.step(cost)
            with torch.no_grad():
                x_a = x_b + increment(v)
                j_final = 0.5 * v.pow(2).sum() + 0.5 * ((y - observations.operator(x_a)).pow(2) * inv_r).sum()
        state = optimiser.state[optimiser._params[0]]
        return Analysis(
            x_a.to(background.dtype).detach(),
            {
                "cost_initial": j0,
                "cost_final": float(j_final),
                "iterations": float(state.get("n_iter", 0)),
                "evaluations": float(evaluations),
                **(
                    {
                        "b_variance_factor_min": float(factors.min()),
                        "b_variance_factor_max": float(factors.max()),
                    }
                    if self.adaptive_variance
                    else {}
                ),
            },
        )
