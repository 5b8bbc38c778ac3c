"""Training-period statistics a run needs, computed once and cached in the data directory.

* normalisation statistics of the truth (to check a checkpoint against the data);
* background-error statistics for B: errors of the emulator's forecasts started from the
  truth, valid over the training period ("training-set background errors"), and those errors
  themselves for an ensemble B;
* the training period's mean state (forecast ACC).

Each product is named by the hash of everything that made it (the truth's key, which for the
nature run hashes its model configuration; channels; period; the forecast model's sha256).
Those of the default setup ship with the package (``cycler_da/data/statistics``, remade and
checked by ``cycler data stats --rebuild``), so a first run needs no training-period truth;
any other truth or model computes its own from `training`, a callable that opens the
training period only when a product has to be made.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from cycler_da.core.channels import TIME
from cycler_da.core.covariance import BackgroundErrorStats, estimate_stats
from cycler_da.normalization import NormStats, climatology, compute_stats
from cycler_da.paths import PACKAGE_DATA, data_dir
from cycler_da.provenance import config_hash
from cycler_da.state import Grid, to_tensor

SHIPPED = PACKAGE_DATA / "statistics"
Training = Callable[[], xr.Dataset]


def _found(name: str, shipped_name: str | None = None) -> Path | None:
    """A product in the data directory, or else among the shipped ones (unless CYCLER_NO_SHIPPED)."""
    mine = data_dir() / "statistics" / name
    if mine.exists():
        return mine
    shipped = SHIPPED / (shipped_name or name)
    return shipped if shipped.exists() and not os.environ.get("CYCLER_NO_SHIPPED") else None


def _cached(kind: str, key: dict, make):
    name = f"{kind}-{config_hash(key)}.json"
    if (found := _found(name)) is not None:
        return json.loads(found.read_text())
    path = data_dir() / "statistics" / name
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
    return value


def truth_norm_stats(
    training: Training, labels: list[str], period: tuple[str, str], source_key: str
) -> NormStats:
    key = {"source": source_key, "channels": labels, "period": list(period)}
    return NormStats.from_dict(
        _cached("norm", key, lambda: compute_stats(training(), labels, *period).as_dict())
    )


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
    the training-set background errors behind B, cached per data source and checkpoint.

    Attributes:
        training: Opens the truth over the training period (called only to make a product).
    """

    training: Training
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
            grid = Grid.from_dataset(self.training())
            source = (
                f"{self.lead_hours}-h forecast errors from the truth at {self.samples} times in "
                f"{self.period[0]}..{self.period[1]}"
            )
            return estimate_stats(self.errors(), grid.latitudes, grid.longitudes, source).as_dict()

        return BackgroundErrorStats.from_dict(_cached("berror", self.key, make))

    def errors(self) -> np.ndarray:
        """The errors themselves, (sample, channel, lat, lon), normalised; stored as float32 and
        always returned so rounded, so a fresh and a cached read give the same B."""
        stem = f"berror-samples-{config_hash(self.key)}"
        path = data_dir() / "statistics" / f"{stem}.npy"
        if (found := _found(path.name, f"{stem}.npz")) is not None:
            try:
                return (np.load(found)["errors"] if found.suffix == ".npz" else np.load(found)).astype(
                    np.float64
                )
            except (OSError, ValueError, KeyError):
                pass  # a corrupt cache file is remade
        tqdm.write(
            f"background-error samples: {self.samples} {self.lead_hours}-h forecasts from the truth over "
            f"{self.period[0]}..{self.period[1]} (once per truth and forecast model; cached in {path.parent})"
        )
        errors = forecast_errors(
            self.training(),
            self.labels,
            self.period,
            self.stats,
            self.emulator,
            self.lead_hours,
            self.samples,
        ).astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
        np.save(tmp, errors)
        os.replace(tmp, path)
        return errors.astype(np.float64)


def truth_climatology(
    training: Training, labels: list[str], period: tuple[str, str], source_key: str
) -> np.ndarray:
    """Time-mean truth over the training period, (channel, lat, lon) in physical units (for ACC).

    One field, not a seasonal climatology: right for the season-free Held–Suarez nature run;
    for a reanalysis truth it makes ACC an anomaly correlation against the period mean.
    """
    key = {"source": source_key, "channels": labels, "period": list(period), "by": "none"}
    return np.asarray(
        _cached("climatology", key, lambda: climatology(training(), labels, *period).values.tolist())
    )


def products(errors: TrainingErrors, with_climatology: bool = True) -> dict[str, Path]:
    """The file names of the products a run with these training errors uses → where they are now."""
    key = errors.key
    names = {
        f"norm-{config_hash({k: key[k] for k in ('source', 'channels', 'period')})}.json": None,
        f"berror-{config_hash(key)}.json": None,
        f"berror-samples-{config_hash(key)}.npy": f"berror-samples-{config_hash(key)}.npz",
    }
    if with_climatology:
        clim = {k: key[k] for k in ("source", "channels", "period")} | {"by": "none"}
        names[f"climatology-{config_hash(clim)}.json"] = None
    return {name: _found(name, shipped) for name, shipped in names.items()}


def remake(errors: TrainingErrors) -> dict[str, Any]:
    """Every product computed afresh from the training period (nothing read from a cache)."""
    key, ds = errors.key, errors.training()
    labels, period = errors.labels, errors.period
    samples = forecast_errors(
        ds, labels, period, errors.stats, errors.emulator, errors.lead_hours, errors.samples
    ).astype(np.float32)
    grid = Grid.from_dataset(ds)
    source = f"{errors.lead_hours}-h forecast errors from the truth at {errors.samples} times in {period[0]}..{period[1]}"
    base = {k: key[k] for k in ("source", "channels", "period")}
    return {
        f"norm-{config_hash(base)}.json": compute_stats(ds, labels, *period).as_dict(),
        f"berror-{config_hash(key)}.json": estimate_stats(
            samples.astype(np.float64), grid.latitudes, grid.longitudes, source
        ).as_dict(),
        f"berror-samples-{config_hash(key)}.npy": samples,
        f"climatology-{config_hash(base | {'by': 'none'})}.json": climatology(
            ds, labels, *period
        ).values.tolist(),
    }


def same(name: str, value: Any, path: Path) -> bool:
    """Whether a remade product equals the one stored at `path` exactly."""
    if name.endswith(".npy"):
        stored = np.load(path)["errors"] if path.suffix == ".npz" else np.load(path)
        return stored.dtype == value.dtype and np.array_equal(stored, value)
    return json.loads(path.read_text()) == json.loads(json.dumps(value))
