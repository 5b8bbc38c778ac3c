"""Training-period statistics a run needs, computed once and cached in the data directory.

* normalisation statistics of the truth (to check a checkpoint against the data);
* background-error statistics for B: errors of the emulator's forecasts started from the
  truth, valid over the training period ("training-set background errors"), and those errors
  themselves for an ensemble B.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from cycler_da.core.channels import TIME
from cycler_da.core.covariance import BackgroundErrorStats, estimate_stats
from cycler_da.normalization import NormStats, climatology, compute_stats
from cycler_da.paths import data_dir
from cycler_da.provenance import config_hash
from cycler_da.state import Grid, to_tensor


def _cached(kind: str, key: dict, make):
    path = data_dir() / "statistics" / f"{kind}-{config_hash(key)}.json"
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
    return value


def truth_norm_stats(
    ds: xr.Dataset, labels: list[str], period: tuple[str, str], source_key: str
) -> NormStats:
    key = {"source": source_key, "channels": labels, "period": list(period)}
    return NormStats.from_dict(_cached("norm", key, lambda: compute_stats(ds, labels, *period).as_dict()))


def forecast_errors(
    ds: xr.Dataset,
    labels: list[str],
    period: tuple[str, str],
    stats: NormStats,
    emulator,
    lead_hours: int,
    samples: int,
) -> np.ndarray:
    """Normalised `lead_hours` forecast-minus-truth errors at `samples` evenly spread times of
    `period`, (sample, channel, lat, lon)."""
    times = pd.DatetimeIndex(ds[TIME].sel({TIME: slice(*period)}).values)
    steps = lead_hours // 6
    history = emulator.frames - 1  # a two-frame emulator starts from two truths
    valid = times[steps + history :]
    chosen = valid[np.linspace(0, len(valid) - 1, samples).round().astype(int)]
    starts = chosen - pd.Timedelta(hours=lead_hours)
    x0 = stats.normalise(to_tensor(ds.sel({TIME: starts}), labels))
    before = stats.normalise(to_tensor(ds.sel({TIME: starts - pd.Timedelta(hours=6 * history)}), labels))
    truth = stats.normalise(to_tensor(ds.sel({TIME: chosen}), labels))
    device = next(emulator.parameters()).device
    with torch.inference_mode():
        forecast = torch.cat(
            [
                emulator.rollout(chunk.to(device), steps, previous.to(device))[-1].cpu()
                for chunk, previous in zip(x0.split(32), before.split(32), strict=True)
            ]
        )
    return (forecast - truth).double().numpy()


@dataclass(frozen=True)
class TrainingErrors:
    """`lead_hours` forecast errors of `emulator` from the truth at `samples` times of `period`:
    the training-set background errors behind B, cached per data source and checkpoint."""

    ds: xr.Dataset
    labels: list[str]
    period: tuple[str, str]
    stats: NormStats
    emulator: Any
    checkpoint_hash: str
    source_key: str
    lead_hours: int = 24
    samples: int = 240

    @property
    def key(self) -> dict:
        return {
            "source": self.source_key,
            "channels": self.labels,
            "period": list(self.period),
            "checkpoint": self.checkpoint_hash,
            "lead_hours": self.lead_hours,
            "samples": self.samples,
        }

    def statistics(self) -> BackgroundErrorStats:
        """Their standard deviations, channel correlations and fitted correlation length."""

        def make() -> dict:
            grid = Grid.from_dataset(self.ds)
            source = (
                f"{self.lead_hours}-h forecast errors from the truth at {self.samples} times in "
                f"{self.period[0]}..{self.period[1]}"
            )
            return estimate_stats(self.errors(), grid.latitudes, grid.longitudes, source).as_dict()

        return BackgroundErrorStats.from_dict(_cached("berror", self.key, make))

    def errors(self) -> np.ndarray:
        """The errors themselves, (sample, channel, lat, lon), normalised; stored as float32 and
        always returned so rounded, so a fresh and a cached read give the same B."""
        path = data_dir() / "statistics" / f"berror-samples-{config_hash(self.key)}.npy"
        if path.exists():
            try:
                return np.load(path).astype(np.float64)
            except (OSError, ValueError):
                pass  # a corrupt cache file is remade
        errors = forecast_errors(
            self.ds, self.labels, self.period, self.stats, self.emulator, self.lead_hours, self.samples
        ).astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
        np.save(tmp, errors)
        os.replace(tmp, path)
        return errors.astype(np.float64)


def truth_climatology(
    ds: xr.Dataset, labels: list[str], period: tuple[str, str], source_key: str
) -> np.ndarray:
    """Time-mean truth over the training period, (channel, lat, lon) in physical units (for ACC).

    One field, not a seasonal climatology: right for the season-free Held–Suarez nature run;
    for a reanalysis truth it makes ACC an anomaly correlation against the period mean.
    """
    key = {"source": source_key, "channels": labels, "period": list(period), "by": "none"}
    return np.asarray(_cached("climatology", key, lambda: climatology(ds, labels, *period).values.tolist()))
