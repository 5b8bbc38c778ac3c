"""Observation networks: where and what is observed in each window.

A network yields, per window, the channel index, latitude and longitude of every
observation. Kinds:

* ``columns``: a random fraction of grid columns, every chosen channel observed there;
  resampled each window or fixed for the run.
* ``elements``: each (channel, grid point) observed independently with a probability.
* ``stations``: a fixed set of off-grid stations spread uniformly over the sphere.
* ``swaths``: near-polar satellite swaths whose ground tracks move east from window to window.

Randomness comes from a seed per network and, for resampled networks, per window, so a
window's network is the same whether the run was interrupted or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("columns", "elements", "stations", "swaths")


@dataclass(frozen=True)
class NetworkSpec:
    """One observation network.

    Attributes:
        kind: One of ``columns``, ``elements``, ``stations``, ``swaths``.
        channels: Indices of the observed channels.
        fraction: Share of grid columns (``columns``), of elements (``elements``), or of the
            grid points inside a swath that are observed (``swaths``).
        resample: Draw new columns each window (``columns``); otherwise fixed for the run.
        stations: Number of stations (``stations``).
        swaths: Number of swaths per window (``swaths``).
        swath_width: Swath width in degrees of longitude at the equator (``swaths``).
        swath_drift: Eastward shift of the ground tracks per window, degrees (``swaths``).
        seed: Seed of this network's random choices.
    """

    kind: str
    channels: tuple[int, ...]
    fraction: float = 0.05
    resample: bool = True
    stations: int = 500
    swaths: int = 2
    swath_width: float = 20.0
    swath_drift: float = 25.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown observation network kind {self.kind!r}; known: {', '.join(KINDS)}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if not self.channels:
            raise ValueError("an observation network must observe at least one channel")


def _rng(seed: int, window: int | None) -> np.random.Generator:
    entropy = [seed, 0 if window is None else window + 1]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def network_locations(
    spec: NetworkSpec, window: int, latitudes: np.ndarray, longitudes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel index, latitude and longitude of every observation of one window.

    Args:
        spec: The network.
        window: Window number since the run's epoch (hours since 1970 / 6), so a window's
            draw depends on its time only.
        latitudes: Model grid latitudes (increasing).
        longitudes: Model grid longitudes.
    """
    nlat, nlon = len(latitudes), len(longitudes)
    channels = np.asarray(spec.channels, dtype=np.int64)
    if spec.kind == "columns":
        rng = _rng(spec.seed, window if spec.resample else None)
        count = max(1, round(spec.fraction * nlat * nlon))
        points = rng.choice(nlat * nlon, size=count, replace=False)
        i, j = np.divmod(np.sort(points), nlon)
        chan = np.repeat(channels[None, :], len(i), axis=0).ravel()
        return chan, np.repeat(latitudes[i], len(channels)), np.repeat(longitudes[j], len(channels))
    if spec.kind == "elements":
        rng = _rng(spec.seed, window)
        mask = rng.random((len(channels), nlat, nlon)) < spec.fraction
        c, i, j = np.nonzero(mask)
        return channels[c], latitudes[i], longitudes[j]
    if spec.kind == "stations":
        rng = _rng(spec.seed, None)
        lat = np.degrees(np.arcsin(rng.uniform(-1, 1, spec.stations)))  # uniform over the sphere
        lon = rng.uniform(0, 360, spec.stations)
        return (
            np.repeat(channels[None, :], spec.stations, axis=0).ravel(),
            np.repeat(lat, len(channels)),
            np.repeat(lon, len(channels)),
        )
    # swaths: near-meridional strips around ground tracks that drift east each window.
    rng = _rng(spec.seed, window)
    tracks = (np.arange(spec.swaths) * 360.0 / spec.swaths + window * spec.swath_drift) % 360
    lon_grid, lat_grid = np.meshgrid(longitudes, latitudes)
    distance = np.abs((lon_grid[None] - tracks[:, None, None] + 180) % 360 - 180)
    # A swath of fixed width on the ground spans more longitude towards the poles.
    half_width = spec.swath_width / 2 / np.maximum(np.cos(np.radians(lat_grid)), 0.05)
    inside = (distance <= half_width[None]).any(axis=0) & (rng.random((nlat, nlon)) < spec.fraction)
    i, j = np.nonzero(inside)
    chan = np.repeat(channels[None, :], len(i), axis=0).ravel()
    return chan, np.repeat(latitudes[i], len(channels)), np.repeat(longitudes[j], len(channels))
