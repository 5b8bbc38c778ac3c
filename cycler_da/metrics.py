"""Verification metrics in WeatherBench 2 conventions.

Fields are arrays ``(..., latitude, longitude)``; ``weights`` are latitude area weights of
mean 1 (:meth:`cycler_da.state.Grid.area_weights`). Per-window scores are area means; a
period's RMSE is the square root of the time mean of the per-window MSE, never the time mean
of per-window RMSEs. Ensembles carry the member axis first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as scipy_stats


def area_mean(field: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Area-weighted mean over the last two axes (latitude, longitude)."""
    return (np.asarray(field) * np.asarray(weights)[:, None]).mean(axis=(-2, -1))


def mse(forecast: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return area_mean((forecast - truth) ** 2, weights)


def bias(forecast: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return area_mean(forecast - truth, weights)


def rmse_over_time(per_window_mse: np.ndarray, axis: int = 0) -> np.ndarray:
    """sqrt(time-mean MSE): the WB2 RMSE of a period from per-window MSEs (NaNs skipped)."""
    return np.sqrt(np.nanmean(per_window_mse, axis=axis))


def acc(forecast: np.ndarray, truth: np.ndarray, climatology: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Anomaly correlation coefficient per field (uncentred, as WB2)."""
    fa, ta = forecast - climatology, truth - climatology
    num = area_mean(fa * ta, weights)
    return num / np.sqrt(area_mean(fa**2, weights) * area_mean(ta**2, weights))


def crps(members: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Area-mean CRPS of an ensemble ``(member, ..., lat, lon)``: E|X−y| − ½E|X−X'|.

    The spread term uses the unbiased pair mean over distinct members ("fair" CRPS, as WB2's
    ``CRPS`` with ``ensemble_dim``); a one-member ensemble scores its absolute error.
    """
    members = np.asarray(members)
    n = members.shape[0]
    skill = np.abs(members - truth).mean(axis=0)
    if n == 1:
        return area_mean(skill, weights)
    # Σ_{i,j}|xi−xj| from the sorted members in O(n log n): 2 Σ_k (2k − n + 1) x_(k).
    ordered = np.sort(members, axis=0)
    k = np.arange(n).reshape((n,) + (1,) * (members.ndim - 1))
    pair_sum = 2 * ((2 * k - n + 1) * ordered).sum(axis=0)
    spread = pair_sum / (n * (n - 1))
    return area_mean(skill - 0.5 * spread, weights)


def ensemble_spread(members: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sqrt(area-mean ensemble variance) with ddof=1."""
    return np.sqrt(area_mean(np.asarray(members).var(axis=0, ddof=1), weights))


def spread_skill(spread_mse: np.ndarray, error_mse: np.ndarray, members: int) -> np.ndarray:
    """Spread–skill ratio sqrt((N+1)/N) · sqrt(mean variance) / RMSE of the ensemble mean."""
    return math.sqrt((members + 1) / members) * np.sqrt(np.nanmean(spread_mse, 0) / np.nanmean(error_mse, 0))


def rank_histogram(members: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Counts of the truth's rank among N members (N+1 bins) over every point; ties split at random."""
    members = np.asarray(members)
    n = members.shape[0]
    below = (members < truth).sum(axis=0)
    ties = (members == truth).sum(axis=0)
    rng = np.random.default_rng(0)
    rank = below + rng.integers(0, ties + 1)
    return np.bincount(rank.ravel(), minlength=n + 1)[: n + 1]


def effective_sample_size(series: np.ndarray) -> float:
    """n·(1−r)/(1+r) with r the lag-1 autocorrelation (AR(1), Wilks 2011 §5.2.4), at least 2."""
    x = np.asarray(series, float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 3 or np.allclose(x, x[0]):
        return float(n)
    a = x - x.mean()
    r = float((a[1:] * a[:-1]).sum() / (a * a).sum())
    r = min(max(r, 0.0), 0.99)
    return max(2.0, n * (1 - r) / (1 + r))


def paired_test(scores: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean of ``scores − reference`` over windows and its two-sided p-value.

    A t-test on the paired differences whose sample size is deflated for lag-1
    autocorrelation between consecutive windows (consecutive cycles are far from independent).
    """
    d = np.asarray(scores, float) - np.asarray(reference, float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return float("nan"), float("nan")
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0:
        return mean, 0.0 if mean != 0 else 1.0
    n_eff = effective_sample_size(d)
    t = mean / (sd / math.sqrt(n_eff))
    return mean, float(2 * scipy_stats.t.sf(abs(t), df=max(n_eff - 1, 1)))


def pooled_paired_test(scores: list[np.ndarray], references: list[np.ndarray]) -> tuple[float, float]:
    """:func:`paired_test` pooled over independent periods (start dates): mean of all paired
    differences and its two-sided p-value.

    Windows within a period are autocorrelated (each period's sample size is deflated as in
    :func:`paired_test`); periods are independent, so the variance of the pooled mean is the
    sum of the periods' variances of their means, weighted by their share of the windows.
    With one period it is :func:`paired_test`.
    """
    diffs = [np.asarray(a, float) - np.asarray(b, float) for a, b in zip(scores, references, strict=True)]
    diffs = [d[np.isfinite(d)] for d in diffs]
    diffs = [d for d in diffs if len(d) >= 2]
    if not diffs:
        return float("nan"), float("nan")
    total = sum(len(d) for d in diffs)
    mean = float(sum(d.sum() for d in diffs) / total)
    variance, df = 0.0, 0.0
    for d in diffs:
        n_eff = effective_sample_size(d)
        variance += (len(d) / total) ** 2 * float(d.var(ddof=1)) / n_eff
        df += n_eff - 1
    if variance == 0:
        return mean, 0.0 if mean != 0 else 1.0
    t = mean / math.sqrt(variance)
    return mean, float(2 * scipy_stats.t.sf(abs(t), df=max(df, 1)))


def zonal_power_spectrum(field: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Power per zonal wavenumber 0…nlon/2, area-weighted mean over latitudes (last two axes)."""
    coeffs = np.fft.rfft(np.asarray(field), axis=-1) / field.shape[-1]
    power = np.abs(coeffs) ** 2
    power[..., 1:] *= 2  # one-sided: fold in the negative wavenumbers
    return (power * np.asarray(weights)[:, None]).mean(axis=-2)


def _torch_area_mean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(channel, lat, lon) → (channel,)."""
    return (x * weights[:, None]).mean(dim=(-2, -1))


def state_scores(
    name: str, state: torch.Tensor, truth: torch.Tensor, std: torch.Tensor, weights: torch.Tensor
) -> dict:
    """RMSE and bias of the ensemble mean and the ensemble spread, per channel, in physical units.

    Args:
        name: Prefix of the keys (``analysis``, ``background``).
        state: Normalised members, (realization, channel, lat, lon).
        truth: Normalised truth, (1, channel, lat, lon).
        std: Each channel's normalisation std, float64, (channel,).
        weights: Area weights of mean 1, float64, (lat,).
    """
    x = state.double()
    err = (x.mean(0) - truth[0].double()) * std[:, None, None]
    spread = x.var(0, unbiased=True) if x.shape[0] > 1 else torch.zeros_like(x[0])
    return {
        f"{name}_rmse": _torch_area_mean(err**2, weights).sqrt().tolist(),
        f"{name}_bias": _torch_area_mean(err, weights).tolist(),
        f"{name}_spread": (_torch_area_mean(spread, weights).sqrt() * std).tolist(),
    }


def departure_scores(
    name: str, departure: np.ndarray, channel: np.ndarray, used: np.ndarray, std: np.ndarray
) -> dict:
    """Mean and RMS of observation departures (O−B, O−A) per channel, physical units; NaN without any."""
    means, rms = [], []
    for c in range(len(std)):
        sel = used & (channel == c)
        d = departure[sel] * std[c]
        means.append(float(d.mean()) if sel.any() else np.nan)
        rms.append(float(np.sqrt((d**2).mean())) if sel.any() else np.nan)
    return {f"{name}_mean": means, f"{name}_rms": rms}
