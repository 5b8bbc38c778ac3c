"""Everything a run builds once: the truth, the forecast model, the method, the networks.

The truth is loaded for the run's windows (and the cold start before them) and normalised
here: from this point the cycle works in normalised units, and only the run directory's
files and scores are physical.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from cycler_da import nature
from cycler_da.config import ConfigError
from cycler_da.core import MethodContext, build_method
from cycler_da.core.channels import TIME
from cycler_da.normalization import NormStats
from cycler_da.regrid import regrid
from cycler_da.run_config import RunConfig
from cycler_da.sources import open_dataset
from cycler_da.state import Grid, to_tensor
from cycler_da.statistics_cache import TrainingErrors, truth_climatology, truth_norm_stats
from forecast_models.checkpoint import check_compatible, file_hash, load_checkpoint, resolve_checkpoint
from observation_ops.networks import NetworkSpec

STEP = pd.Timedelta(hours=6)


class RunError(RuntimeError):
    """A run that cannot start or continue; earlier windows are left intact."""


@dataclass(frozen=True, kw_only=True)
class Setup:
    """Everything built once per run.

    Attributes:
        truth: The truth over the run, normalised, (time, channel, lat, lon).
        error_std: σ_o per channel, normalised, (channel,).
        background_std: QC's σ_b, normalised, (channel, lat).
        error_std_b: B's standard deviations (24-h forecast errors), normalised, (channel, lat).
        fallback: The 3D-Var that replaces a diverged analysis (``guard.on_divergence: 3dvar``).
        climatology: Physical (channel, lat, lon), for forecast ACC; None without forecasts.
    """

    config: RunConfig
    run_dir: Path
    labels: list[str]
    grid: Grid
    stats: NormStats
    truth: torch.Tensor
    truth_times: pd.DatetimeIndex
    truth_path: str
    emulator: torch.nn.Module
    checkpoint: Path
    checkpoint_sha: str
    method: object
    networks: list[NetworkSpec]
    error_std: np.ndarray
    background_std: np.ndarray
    error_std_b: np.ndarray
    windows: pd.DatetimeIndex
    device: torch.device
    climatology: np.ndarray | None = None
    fallback: object | None = None

    def truth_or_none(self, time: pd.Timestamp) -> torch.Tensor | None:
        """The truth at `time` if the loaded truth covers it (forecast verification)."""
        return self.truth_at(time) if time in self.truth_times else None

    def truth_at(self, time: pd.Timestamp) -> torch.Tensor:
        """The normalised truth at `time`, (1, channel, lat, lon), checked finite."""
        index = self.truth_times.get_indexer([time])[0]
        if index < 0:
            raise RunError(f"the truth has no state at {time}")
        state = self.truth[index : index + 1]
        if not torch.isfinite(state).all():
            bad = [self.labels[c] for c in range(state.shape[1]) if not torch.isfinite(state[0, c]).all()]
            raise RunError(f"the truth at {time} has NaN or infinity in channels {bad}: the data is corrupt")
        return state.to(self.device)

    def physical(self, state: torch.Tensor) -> torch.Tensor:
        """A normalised state in physical units, float32: as the run directory holds it."""
        return self.stats.denormalise(state).float()

    def normalised(self, physical: torch.Tensor) -> torch.Tensor:
        """A physical state (as written or read back) in the cycle's normalised units."""
        return self.stats.normalise(physical)


def open_truth(config: RunConfig, start: pd.Timestamp, end: pd.Timestamp) -> tuple[xr.Dataset, str, str]:
    """The truth covering [start, end] (lazy), its path and a cache key.

    The nature run is integrated for the months of [start, end] only (from the shipped monthly
    states); a dataset is opened whole.
    """
    truth = config.truth
    if truth.source == "nature":
        spec = nature.NatureSpec(truth.nature.resolution, truth.nature.seed, truth.nature.compiled)
        return nature.open_nature(start, end, spec), str(spec.cache_dir), spec.key
    ds = open_dataset(truth.path)
    if TIME not in ds.dims:
        hint = " (monthly means are a climatology, not states)" if "month" in ds.dims else ""
        raise RunError(
            f"truth.path {truth.path}: the truth needs a {TIME!r} dimension of 6-hourly states; "
            f"its dimensions are {sorted(map(str, ds.dims))}{hint}"
        )
    return ds, str(truth.path), f"dataset:{truth.path}"


def _earliest_truth(config: RunConfig, takes_previous: bool) -> pd.Timestamp:
    """The oldest truth any forecast-from-truth needs: the cold start's oldest member, and 6 h
    more for a two-frame emulator's previous state (seed-protocol backgrounds start later)."""
    cold = config.cold_start
    hours = cold.lead_hours + cold.lagged_hours * (config.ensemble.members - 1) + (6 if takes_previous else 0)
    return pd.Timestamp(config.run.start) - pd.Timedelta(hours=hours)


def _networks(config: RunConfig) -> list[NetworkSpec]:
    index = {label: i for i, label in enumerate(config.channels)}
    every = tuple(range(len(config.channels)))
    return [
        NetworkSpec(
            channels=every if n.channels == "all" else tuple(index[c] for c in n.channels),
            **n.model_dump(exclude={"channels"}),
        )
        for n in config.observations.networks
    ]


def _error_std(config: RunConfig, stats: NormStats) -> np.ndarray:
    """σ_o per channel in normalised units: relative to each channel's std, or absolute."""
    error_std = np.full(len(config.channels), config.observations.relative_error)
    for label, value in config.observations.absolute_error.items():
        c = config.channels.index(label)
        error_std[c] = value / stats.std[c]
    return error_std


@dataclass(frozen=True, kw_only=True)
class _Truth:
    """The run's span of the truth (loaded) on the model's grid, its normalisation, and a way to
    open the training period (only to make a statistic that is neither cached nor shipped)."""

    training: Callable[[], xr.Dataset]
    window: xr.Dataset
    path: str
    key: str
    grid: Grid
    stats: NormStats


def _load_truth(
    config: RunConfig, windows: pd.DatetimeIndex, emulator, manifest: dict, checkpoint: Path
) -> _Truth:
    """The truth over the run, regridded to the model's grid; refuses a model trained on other data."""
    earliest = _earliest_truth(config, emulator.takes_previous)
    # Forecasts from analyses are scored as far as the truth reaches past the last window.
    forecast = config.forecast
    last = windows[-1] + pd.Timedelta(hours=forecast.max_lead_hours if forecast.from_hours else 0)
    model_grid = Grid.from_dict(manifest["grid"])

    def on_model_grid(ds: xr.Dataset) -> xr.Dataset:
        return ds if Grid.from_dataset(ds).same_as(model_grid) else regrid(ds, model_grid)

    ds, path, key = open_truth(config, earliest, last)
    _check_covers(ds, path, earliest, windows[-1])
    ds = on_model_grid(ds)
    period = config.truth.train_period
    span = pd.Timestamp(period[0]), pd.Timestamp(period[1])
    training = functools.cache(lambda: on_model_grid(open_truth(config, *span)[0]))
    grid = Grid.from_dataset(ds)
    labels = list(config.channels)
    stats = truth_norm_stats(training, labels, period, key)
    try:
        check_compatible(
            manifest,
            labels,
            grid.latitudes,
            grid.longitudes,
            stats.mean,
            stats.std,
            name=f"checkpoint {checkpoint}",
        )
    except ValueError as err:
        raise RunError(str(err)) from err
    window = ds.sel({TIME: slice(earliest, last)}).load()
    if len(missing := windows.difference(pd.DatetimeIndex(window[TIME].values))):
        raise RunError(f"the truth lacks {len(missing)} window times, first {missing[0]} (source {path})")
    return _Truth(training=training, window=window, path=path, key=key, grid=grid, stats=stats)


def _check_covers(ds: xr.Dataset, path: str, earliest: pd.Timestamp, last: pd.Timestamp) -> None:
    """Refuses a truth that starts after the cold start's first state or ends before the last window."""
    times = pd.DatetimeIndex(ds[TIME].values)
    if times[-1] < last:
        raise RunError(
            f"the truth ({path}) ends at {times[-1]:%Y-%m-%d %H:%M}, before the run's last window "
            f"{last:%Y-%m-%d %H:%M}: shorten run.days or extend the truth"
        )
    if times[0] > earliest:
        raise RunError(
            f"the truth ({path}) starts at {times[0]:%Y-%m-%d %H:%M}, after {earliest:%Y-%m-%d %H:%M}, the "
            "oldest state the cold start forecasts from: start the run later or extend the truth"
        )


def training_errors(config: RunConfig) -> TrainingErrors:
    """The training-set errors (and so every training-period statistic) of `config`'s truth and model."""
    checkpoint = resolve_checkpoint(config.forecast.checkpoint)
    emulator, manifest = load_checkpoint(checkpoint, "cpu")
    start = pd.Timestamp(config.run.start)
    windows = pd.DatetimeIndex([start + STEP])
    truth = _load_truth(config, windows, emulator, manifest, checkpoint)
    period = config.truth.train_period
    return TrainingErrors(
        truth.training, list(config.channels), period, truth.stats, emulator, file_hash(checkpoint), truth.key
    )


def _method(
    config: RunConfig, truth: _Truth, errors: TrainingErrors, statistics, device: torch.device, name: str
):
    """Analysis method `name` with the run's parameters (its defaults for the fallback), built once."""
    # The training errors move with the emulator; an ensemble B asks for them lazily.
    context = MethodContext(
        channels=tuple(config.channels),
        latitudes=truth.grid.latitudes,
        longitudes=truth.grid.longitudes,
        background_error=statistics,
        background_error_samples=errors.errors,
        device=str(device),
        normalisation=truth.stats,
        members=config.ensemble.members,
    )
    try:
        params = config.method.params if name == config.method.name else {}
        return build_method(name, context, **params)
    except ValueError as err:
        raise ConfigError(f"method: {err}") from err


def build_setup(config: RunConfig, run_dir: Path) -> Setup:
    """Loads and checks everything the run needs; nothing is written."""
    labels = list(config.channels)
    device = torch.device(config.run.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("run.device is cuda, but torch sees no CUDA device")
    start = pd.Timestamp(config.run.start)
    windows = pd.date_range(start + STEP, start + pd.Timedelta(days=config.run.days), freq=STEP)
    checkpoint = resolve_checkpoint(config.forecast.checkpoint)
    emulator, manifest = load_checkpoint(checkpoint, device)
    truth = _load_truth(config, windows, emulator, manifest, checkpoint)
    period, sha = config.truth.train_period, file_hash(checkpoint)
    errors = TrainingErrors(truth.training, labels, period, truth.stats, emulator.cpu(), sha, truth.key)
    statistics = errors.statistics()
    emulator.to(device)
    if config.forecast.compile:
        tqdm.write("compiling the forecast network (torch.compile; the first windows are slower)")
        emulator.compile_network()
    method = _method(config, truth, errors, statistics, device, config.method.name)
    guard = config.guard.on_divergence
    fallback = _method(config, truth, errors, statistics, device, "3dvar") if guard == "3dvar" else None
    forecasts = bool(config.forecast.from_hours)
    return Setup(
        config=config,
        run_dir=run_dir,
        labels=labels,
        grid=truth.grid,
        stats=truth.stats,
        truth=truth.stats.normalise(to_tensor(truth.window, labels)),
        truth_times=pd.DatetimeIndex(truth.window[TIME].values),
        truth_path=truth.path,
        emulator=emulator,
        checkpoint=checkpoint,
        checkpoint_sha=sha,
        method=method,
        networks=_networks(config),
        error_std=_error_std(config, truth.stats),
        background_std=statistics.std * config.observations.qc.background_error_scale,
        error_std_b=statistics.std,
        windows=windows,
        device=device,
        climatology=truth_climatology(truth.training, labels, period, truth.key) if forecasts else None,
        fallback=fallback,
    )
