"""PhyDA's physical residuals of normalised states, and PRDO's penalty on them.

R(x) gathers the balance residuals of :class:`cycler_da.core.balance.Balance` (geostrophic,
hydrostatic, thermal wind) of the state in SI units, each divided by the RMS of the same
residual over the truth's training states, so the truth scores mean(R²) ≈ 1 in every term
whatever its units. PRDO (the physically regularised diffusion objective) adds
λ(t) mean(R(x̂0)²) to the prior's ε-loss, on Tweedie's estimate x̂0 rather than on the noisy
x_t, whose residuals mean nothing.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from cycler_da.core.balance import TERMS, Balance

Schedule = Literal["constant", "signal"]


class ResidualSet:
    """R(x) of normalised states ``(batch, channel, lat, lon)``.

    Args:
        balance: The grid's balance operators.
        mean, std: The states' normalisation, physical units per channel, (channel,).
        scales: The truth's RMS of each term, in SI units (see :meth:`fit`).
    """

    def __init__(self, balance: Balance, mean, std, scales: dict[str, float]):
        unknown = set(scales) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown residual terms {sorted(unknown)}; known: {', '.join(TERMS)}")
        self.balance, self.scales = balance, scales
        self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]

    @classmethod
    def fit(
        cls, balance: Balance, mean, std, truth: Tensor, terms: list[str] | tuple[str, ...], batch: int = 64
    ) -> ResidualSet:
        """The set of `terms` scaled by the truth's own RMS residuals over normalised states `truth`."""
        missing = [t for t in terms if t not in balance.terms]
        if missing:
            raise ValueError(
                f"the channels support no {', '.join(missing)} residual; they support {', '.join(balance.terms)}"
            )
        unit = cls(balance, mean, std, dict.fromkeys(terms, 1.0))
        squares = {t: 0.0 for t in terms}
        with torch.no_grad():
            for chunk in truth.split(batch):
                for term, r in unit.terms(chunk).items():
                    squares[term] += float(r.square().flatten(1).mean(1).sum())
        return cls(balance, mean, std, {t: (squares[t] / truth.shape[0]) ** 0.5 for t in terms})

    def terms(self, x: Tensor) -> dict[str, Tensor]:
        """Each term's residual of normalised `x`, in units of the truth's RMS."""
        physical = x * self.std.to(x) + self.mean.to(x)
        residuals = self.balance.residuals(physical, list(self.scales))
        return {term: r / self.scales[term] for term, r in residuals.items()}

    def __call__(self, x: Tensor) -> Tensor:
        """(batch,) mean over terms of mean(R²): about 1 for the truth."""
        terms = [r.square().flatten(1).mean(1) for r in self.terms(x).values()]
        return torch.stack(terms).mean(0)


def prdo_weight(t: Tensor, weight: float, schedule: Schedule, mu: Tensor) -> Tensor:
    """λ(t): `weight` at every noise level ("constant"), or times μ_t² ("signal"), which fades
    the penalty where Tweedie's estimate is mostly the network's guess."""
    if schedule == "constant":
        return torch.full_like(t, weight)
    return weight * mu.square()
