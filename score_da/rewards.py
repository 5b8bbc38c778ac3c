"""Align-DA's rewards of prior samples, and the preference pairs they make.

For one background, N samples of the prior are scored against the truth:

* accuracy: per channel, the area-weighted RMSE (normalised units) of each sample; sample n
  beats sample j on channel m with probability σ(e_j,m − e_n,m) (Bradley–Terry), and its
  reward is that probability averaged over channels and over the other samples;
* forecast: the same form on each sample's 48-h forecast against the truth 48 h later;
* physics: the Geo-Score 2 σ(−|D − D_truth| / D_truth) of the relative geostrophic imbalance
  D (:mod:`cycler_da.core.balance`), 1 when a sample is exactly as balanced as the truth;
  optionally the same of the hydrostatic imbalance.

Pairs: winners are the samples in the top decile of every reward, losers those in the bottom
decile of every reward, each by rank sum when no sample is in all (the multi-reward set, -M);
the physics-only set (-P) pairs the five best with the five worst Geo-Scores.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cycler_da.core.balance import Balance, balance_score

REWARDS = ("accuracy", "forecast", "geostrophic", "hydrostatic")


def area_rmse(states: Tensor, truth: Tensor, weights: Tensor) -> Tensor:
    """(sample, channel) area-weighted RMSE of ``(sample, channel, lat, lon)`` against ``(channel, lat, lon)``;
    `weights` (lat,) have mean 1."""
    return ((states - truth).square() * weights[:, None]).mean((-2, -1)).sqrt()


def bradley_terry(errors: Tensor) -> Tensor:
    """(sample,) rewards from (sample, channel) errors: the mean over channels and over the other
    samples j of σ(e_j − e_n), the probability that sample n is the more accurate."""
    n = errors.shape[0]
    if n < 2:
        raise ValueError("a pairwise reward needs at least two samples")
    wins = torch.sigmoid(errors[None, :, :] - errors[:, None, :])  # [n, j, m]: n beats j on m
    others = ~torch.eye(n, dtype=torch.bool, device=errors.device)
    return (wins * others[..., None]).sum(1).mean(-1) / (n - 1)


def balance_rewards(balance: Balance, physical: Tensor, truth_physical: Tensor) -> dict[str, Tensor]:
    """{"geostrophic", "hydrostatic"} scores, each (sample,), of states in physical units."""
    ours = balance.relative_imbalance(physical)
    theirs = balance.relative_imbalance(truth_physical)
    return {kind: balance_score(ours[kind], theirs[kind]) for kind in ours}


def _extreme(rewards: Tensor, count: int, best: bool) -> list[int]:
    """Samples within the `count` best (or worst) of every reward, else the `count` best by rank sum."""
    order = rewards.argsort(dim=0, descending=best)[:count]  # (count, reward)
    sets = [set(order[:, r].tolist()) for r in range(rewards.shape[1])]
    common = sorted(set.intersection(*sets))
    if common:
        return common
    ranks = rewards.argsort(dim=0).argsort(dim=0).sum(dim=1)  # higher: better
    return ranks.argsort(descending=best)[:count].tolist()


def select_pairs(rewards: Tensor, decile: float = 0.1) -> list[tuple[int, int]]:
    """(winner, loser) sample indices from (sample, reward) scores (higher: better): every winner in
    the top `decile` of all rewards with every loser in the bottom one (rank-sum fallbacks)."""
    count = max(1, round(decile * rewards.shape[0]))
    winners = _extreme(rewards, count, best=True)
    losers = _extreme(rewards, count, best=False)
    return [(w, lo) for w in winners for lo in losers if w != lo]


def physics_pairs(geo_score: Tensor, count: int = 5) -> list[tuple[int, int]]:
    """(winner, loser): the `count` best Geo-Scores with the `count` worst."""
    order = geo_score.argsort(descending=True).tolist()
    return [(w, lo) for w in order[:count] for lo in order[-count:] if w != lo]
