"""One window's observations: networks → simulated values → QC → :class:`Observations`.

y = H(truth) + ε with ε ~ N(0, σ_o²), drawn from a generator seeded by the run seed and the
window's time, so a window's observations are identical in an interrupted and an
uninterrupted run. QC is the same for every method: non-finite values are removed, then
a background check rejects |O−B| > k·sqrt(σ_o² + σ_b²), then optional thinning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cycler_da.core.contract import Observations
from cycler_da.core.geometry import great_circle_km
from observation_ops.networks import NetworkSpec, network_locations
from observation_ops.operator import PointObservationOperator

QC_USED, QC_NONFINITE, QC_BACKGROUND, QC_THINNED = 0, 1, 2, 3
# CF flag_meanings: one blank-free word per value of QC_USED, QC_NONFINITE, QC_BACKGROUND, QC_THINNED.
QC_MEANINGS = "used rejected_not_finite rejected_by_background_check rejected_by_thinning"


def window_index(time: pd.Timestamp) -> int:
    """Number of 6-hour windows since 1970-01-01: the seed of everything window-specific."""
    return int((pd.Timestamp(time) - pd.Timestamp("1970-01-01")) // pd.Timedelta(hours=6))


def window_generator(seed: int, time: pd.Timestamp, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, window_index(time), stream]))


@dataclass
class WindowObservations:
    """All observations of a window (with QC flags) and the ones that passed, for the method.

    Attributes:
        channel, latitude, longitude, values, error_std: every observation (normalised units).
        flags: QC flag per observation (see QC_MEANINGS).
        background_equivalent: H(background), ensemble mean, per observation (normalised).
        used: Observations that passed QC, ready for the analysis (None if none passed).
    """

    channel: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    values: np.ndarray
    error_std: np.ndarray
    flags: np.ndarray
    background_equivalent: np.ndarray
    operator: PointObservationOperator
    used: Observations | None

    @property
    def keep(self) -> np.ndarray:
        return self.flags == QC_USED


def simulate(
    time: pd.Timestamp,
    truth: torch.Tensor,
    networks: list[NetworkSpec],
    error_std: np.ndarray,
    latitudes: np.ndarray,
    longitudes: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simulated observations of one window (normalised units).

    Args:
        truth: Normalised truth at `time`, shape (1, channel, lat, lon).
        error_std: σ_o per channel, normalised, shape (channel,).

    Returns:
        channel, latitude, longitude, values and error_std, one entry per observation.
    """
    widx = window_index(time)
    parts = [network_locations(spec, widx, latitudes, longitudes) for spec in networks]
    channel = np.concatenate([p[0] for p in parts])
    latitude = np.concatenate([p[1] for p in parts])
    longitude = np.concatenate([p[2] for p in parts])
    operator = PointObservationOperator(channel, latitude, longitude, latitudes, longitudes)
    with torch.no_grad():
        exact = operator(truth.double())[0].cpu().numpy()
    sigma = error_std[channel]
    noise = window_generator(seed, time, stream=1).standard_normal(len(channel))
    return channel, latitude, longitude, exact + sigma * noise, sigma


def quality_control(
    channel: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    values: np.ndarray,
    error_std: np.ndarray,
    background: torch.Tensor,
    background_std: np.ndarray,
    grid_latitudes: np.ndarray,
    grid_longitudes: np.ndarray,
    background_check: float | None = 5.0,
    thinning_km: float | None = None,
) -> WindowObservations:
    """QC against the background and packaging for the analysis.

    Args:
        background: Normalised background, (realization, channel, lat, lon).
        background_std: σ_b per channel and latitude (normalised) for the background check.
            Every method, ensemble or not, is checked against this same σ_b: an ensemble's
            spread would make QC depend on the method (and a collapsed spread would reject
            the very observations that could correct it).
    """
    flags = np.full(len(values), QC_USED, dtype=np.int8)
    flags[~np.isfinite(values)] = QC_NONFINITE
    operator = PointObservationOperator(channel, latitude, longitude, grid_latitudes, grid_longitudes)
    with torch.no_grad():
        hx = operator(background.double()).cpu().numpy()  # (members, obs)
    if background_check is not None and len(values):
        rows = np.abs(grid_latitudes[None, :] - latitude[:, None]).argmin(axis=1)
        sigma_b = background_std[channel, rows]
        departure = np.abs(values - hx.mean(axis=0))
        bad = departure > background_check * np.sqrt(error_std**2 + sigma_b**2)
        flags[(flags == QC_USED) & bad] = QC_BACKGROUND
    if thinning_km is not None:
        flags[_thin(channel, latitude, longitude, flags == QC_USED, thinning_km)] = QC_THINNED
    keep = flags == QC_USED
    used = None
    if keep.any():
        used = Observations(
            torch.as_tensor(values[keep], device=background.device),
            torch.as_tensor(error_std[keep], device=background.device),
            operator.subset(keep),
        )
    return WindowObservations(
        channel, latitude, longitude, values, error_std, flags, hx.mean(axis=0), operator, used
    )


def _thin(channel, latitude, longitude, candidate: np.ndarray, km: float) -> np.ndarray:
    """Greedy thinning per channel: drop observations within `km` of one already kept."""
    drop = np.zeros(len(channel), dtype=bool)
    for c in np.unique(channel[candidate]):
        index = np.nonzero(candidate & (channel == c))[0]
        d = great_circle_km(latitude[index], longitude[index], latitude[index], longitude[index])
        kept: list[int] = []
        for k in range(len(index)):
            if kept and d[k, kept].min() < km:
                drop[index[k]] = True
            else:
                kept.append(k)
    return drop
