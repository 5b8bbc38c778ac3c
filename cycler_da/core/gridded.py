"""Observations placed on the model grid: what RePaint composes with and a VRE reads."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cycler_da.core.contract import Observations


def nearest_cells(
    latitude: np.ndarray, longitude: np.ndarray, latitudes: np.ndarray, longitudes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the grid cell nearest each point (longitude periodic)."""
    rows = np.abs(np.asarray(latitude)[:, None] - np.asarray(latitudes)[None, :]).argmin(axis=1)
    gap = np.abs(np.asarray(longitude)[:, None] - np.asarray(longitudes)[None, :]) % 360.0
    cols = np.minimum(gap, 360.0 - gap).argmin(axis=1)
    return rows, cols


def observations_on_grid(
    observations: Observations, latitudes: np.ndarray, longitudes: np.ndarray, channels: int
) -> tuple[Tensor, Tensor]:
    """(values, mask), each ``(channel, lat, lon)``: each observation in its nearest cell (the
    mean where several share one), zero and mask 0 where there is none."""
    op = observations.operator
    rows, cols = nearest_cells(op.latitude, op.longitude, latitudes, longitudes)
    shape = (channels, len(latitudes), len(longitudes))
    flat = torch.as_tensor(
        (np.asarray(op.channel) * shape[1] + rows) * shape[2] + cols, device=observations.values.device
    )
    values = observations.values.new_zeros(shape).flatten()
    counts = observations.values.new_zeros(shape).flatten()
    values.index_add_(0, flat, observations.values)
    counts.index_add_(0, flat, torch.ones_like(observations.values))
    mask = (counts > 0).to(values.dtype)
    return (values / counts.clamp_min(1)).reshape(shape), mask.reshape(shape)
