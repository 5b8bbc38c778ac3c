"""Per-channel normalisation statistics and climatologies from a training period."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import xarray as xr

from cycler_da.core.channels import LATITUDE, TIME
from cycler_da.sources import DataError
from cycler_da.state import Grid, stack_channels


@dataclass(frozen=True)
class NormStats:
    """Per-channel mean and standard deviation in physical units.

    Attributes:
        channels: Channel labels.
        mean: Area-weighted mean per channel, shape (channel,).
        std: Area-weighted standard deviation per channel, shape (channel,).
        period: The [start, end] training period they were computed on (ISO dates).
    """

    channels: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    period: tuple[str, str]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Physical → normalised, ``(..., channel, lat, lon)``."""
        mean, std = self._broadcast(x)
        return (x - mean) / std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised → physical, ``(..., channel, lat, lon)``."""
        mean, std = self._broadcast(x)
        return x * std + mean

    def _broadcast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-3] != len(self.channels):
            raise ValueError(f"tensor has {x.shape[-3]} channels, statistics have {len(self.channels)}")
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
        return mean, std

    def as_dict(self) -> dict:
        return {
            "channels": list(self.channels),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "period": list(self.period),
        }

    @classmethod
    def from_dict(cls, d: dict) -> NormStats:
        return cls(tuple(d["channels"]), np.asarray(d["mean"]), np.asarray(d["std"]), tuple(d["period"]))

    def mismatch(self, other: NormStats, rtol: float = 1e-3) -> str | None:
        """Says how two sets of statistics differ, or None when they agree."""
        from forecast_models.checkpoint import normalisation_mismatch

        if self.channels != other.channels:
            return f"channels differ: {list(self.channels)} vs {list(other.channels)}"
        found = normalisation_mismatch(self.channels, (self.mean, self.std), (other.mean, other.std), rtol)
        return None if found is None else f"normalisation {found[0]} differs for channels {found[1]}"


def _period(ds: xr.Dataset, start: str, end: str) -> xr.Dataset:
    sub = ds.sel({TIME: slice(pd.Timestamp(start), pd.Timestamp(end))})
    if sub.sizes.get(TIME, 0) == 0:
        first, last = (pd.Timestamp(t) for t in (ds[TIME].values.min(), ds[TIME].values.max()))
        span = f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
        raise DataError(f"no data between {start} and {end}; the dataset covers {span}")
    return sub


def compute_stats(ds: xr.Dataset, labels: list[str] | tuple[str, ...], start: str, end: str) -> NormStats:
    """Area-weighted per-channel mean and std over [start, end] (every time, every point)."""
    stacked = stack_channels(_period(ds, start, end), labels)
    weights = xr.DataArray(Grid.from_dataset(ds).area_weights(), dims=[LATITUDE])
    reduce_dims = [d for d in stacked.dims if d != "channel"]
    weighted = stacked.weighted(weights)
    mean = weighted.mean(reduce_dims)
    std = np.sqrt(((stacked - mean) ** 2).weighted(weights).mean(reduce_dims))
    mean_v, std_v = mean.values.astype(np.float64), std.values.astype(np.float64)
    # Round-off leaves a constant channel with a tiny positive std: judge it relatively.
    if not np.all(np.isfinite(std_v)) or np.any(std_v <= 1e-6 * np.maximum(np.abs(mean_v), 1.0)):
        raise DataError(f"degenerate standard deviation for channels {list(labels)}: {std_v}")
    return NormStats(tuple(labels), mean_v, std_v, (str(start), str(end)))


def climatology(
    ds: xr.Dataset, labels: list[str] | tuple[str, ...], start: str, end: str, by: str = "none"
) -> xr.DataArray:
    """The climatological mean of each channel over a training period.

    Args:
        by: "none" for one time-mean field (the Held–Suarez nature run has no seasons or
            diurnal cycle), "hour" for a diurnal climatology, "dayofyear" for a seasonal one.

    Returns:
        DataArray (channel, latitude, longitude), with a leading ``hour`` or ``dayofyear``
        dimension when grouped.
    """
    stacked = stack_channels(_period(ds, start, end), labels)
    if by == "none":
        return stacked.mean(TIME)
    if by not in ("hour", "dayofyear"):
        raise ValueError(f"climatology by={by!r}: choose none, hour or dayofyear")
    return stacked.groupby(f"{TIME}.{by}").mean(TIME)
