"""The differentiable observation operator H: point observations of state channels.

Each observation is one channel at one (latitude, longitude). H interpolates the state
bilinearly in (latitude, longitude) on any global latitude/longitude grid: longitude wraps
around, and beyond the outermost latitude rows the value is held constant (the nearest row),
which is exact for observations on grid points. H is linear, so its tangent-linear model is
itself and its adjoint comes from autograd.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _bracket(coords: np.ndarray, values: np.ndarray, periodic: float | None) -> tuple[np.ndarray, ...]:
    """Lower/upper neighbour indices and the weight of the upper one, per value."""
    n = coords.size
    if periodic is not None:
        spacing = periodic / n
        if not np.allclose(np.diff(coords), spacing, atol=1e-6 * periodic):
            raise ValueError("longitudes must be equally spaced over 360 degrees")
        position = ((values - coords[0]) % periodic) / spacing
        lower = np.floor(position).astype(np.int64) % n
        weight = position - np.floor(position)
        return lower, (lower + 1) % n, weight
    clipped = np.clip(values, coords[0], coords[-1])
    upper = np.clip(np.searchsorted(coords, clipped, side="right"), 1, n - 1)
    lower = upper - 1
    weight = (clipped - coords[lower]) / (coords[upper] - coords[lower])
    return lower, upper, weight


class PointObservationOperator:
    """H for point observations; callable on ``(realization, channel, lat, lon)``.

    Args:
        channel: Channel index of each observation, shape (obs,).
        latitude: Observation latitudes in degrees, shape (obs,).
        longitude: Observation longitudes in degrees (any range), shape (obs,).
        grid_latitudes: Model grid latitudes, increasing, shape (lat,).
        grid_longitudes: Model grid longitudes, equally spaced from some origin, shape (lon,).
    """

    def __init__(
        self,
        channel: np.ndarray,
        latitude: np.ndarray,
        longitude: np.ndarray,
        grid_latitudes: np.ndarray,
        grid_longitudes: np.ndarray,
    ):
        channel, latitude, longitude = (np.asarray(a) for a in (channel, latitude, longitude))
        if not channel.shape == latitude.shape == longitude.shape or channel.ndim != 1:
            raise ValueError("channel, latitude and longitude must be 1-D arrays of one length")
        if latitude.size and not (np.isfinite(latitude).all() and np.isfinite(longitude).all()):
            raise ValueError("observation latitudes and longitudes must be finite")
        if latitude.size and (np.abs(latitude) > 90).any():
            raise ValueError("observation latitudes must lie within [-90, 90]")
        grid_latitudes, grid_longitudes = (
            np.asarray(grid_latitudes, float),
            np.asarray(grid_longitudes, float),
        )
        if grid_latitudes.ndim != 1 or grid_latitudes.size < 2 or not (np.diff(grid_latitudes) > 0).all():
            raise ValueError(
                "H interpolates between grid rows: the grid needs at least 2 strictly increasing latitudes; "
                f"got {grid_latitudes.size} ({grid_latitudes[:4].tolist()}...)"
            )
        if grid_longitudes.ndim != 1 or grid_longitudes.size < 2:
            raise ValueError(f"the grid needs at least 2 longitudes; got {grid_longitudes.size}")
        self.nlat, self.nlon = len(grid_latitudes), len(grid_longitudes)
        self.channel = channel.astype(np.int64)
        self.latitude, self.longitude = latitude.astype(float), longitude.astype(float) % 360
        i0, i1, wi = _bracket(np.asarray(grid_latitudes, float), latitude.astype(float), None)
        j0, j1, wj = _bracket(np.asarray(grid_longitudes, float), longitude.astype(float), 360.0)
        c = self.channel
        flat = lambda i, j: (c * self.nlat + i) * self.nlon + j  # noqa: E731
        self._index = torch.as_tensor(np.stack([flat(i0, j0), flat(i0, j1), flat(i1, j0), flat(i1, j1)]))
        weights = np.stack([(1 - wi) * (1 - wj), (1 - wi) * wj, wi * (1 - wj), wi * wj])
        self._weights = torch.as_tensor(weights, dtype=torch.float64)

    def __len__(self) -> int:
        return self.channel.size

    def __call__(self, state: Tensor) -> Tensor:
        """H(x): ``(realization, channel, lat, lon)`` → ``(realization, obs)``."""
        if state.shape[-2:] != (self.nlat, self.nlon):
            raise ValueError(
                f"state grid {tuple(state.shape[-2:])} is not the operator's {(self.nlat, self.nlon)}"
            )
        flat = state.reshape(state.shape[0], -1)
        index = self._index.to(state.device)
        weights = self._weights.to(device=state.device, dtype=state.dtype)
        return (flat[:, index] * weights).sum(dim=1)

    def subset(self, keep: np.ndarray) -> PointObservationOperator:
        """The operator for the observations where `keep` is true (for QC)."""
        out = object.__new__(PointObservationOperator)
        out.nlat, out.nlon = self.nlat, self.nlon
        out.channel = self.channel[keep]
        out.latitude, out.longitude = self.latitude[keep], self.longitude[keep]
        mask = torch.as_tensor(np.asarray(keep, bool))
        out._index, out._weights = self._index[:, mask], self._weights[:, mask]
        return out
