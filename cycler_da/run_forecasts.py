"""Forecasts from analyses during ``cycler run``: made, written to forecasts/, scored.

A forecast starts from every analysis whose UTC hour is in ``forecast.from_hours`` (all
members, batched) and is written with a ``prediction_timedelta`` dimension (WB2). Each lead
whose valid time the truth covers is scored: RMSE of the ensemble mean, bias, ACC against the
training-period climatology, and for ensembles spread and CRPS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from cycler_da import metrics
from cycler_da.core.channels import REALIZATION, TIME
from cycler_da.io import write_dataset
from cycler_da.run_io import write_scores_dataset
from cycler_da.state import Grid, to_dataset

LEAD = "prediction_timedelta"
SCORES = ("rmse", "bias", "acc", "spread", "crps")


def lead_hours(config) -> list[int]:
    f = config.forecast
    return list(range(f.lead_step_hours, f.max_lead_hours + 1, f.lead_step_hours))


def wanted(config, time: pd.Timestamp) -> bool:
    return time.hour in config.forecast.from_hours


def make_forecast(
    emulator, x_a: torch.Tensor, leads: list[int], previous: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalised forecast ``(lead, realization, channel, lat, lon)`` at the given lead hours;
    `previous` is the state 6 h before `x_a` (two-frame emulators)."""
    out, state = [], x_a
    with torch.inference_mode():
        for step in range(1, leads[-1] // 6 + 1):
            previous, state = state, emulator.step(state, previous)
            if step * 6 in leads:
                out.append(state)
    return torch.stack(out)


def write_forecast(
    path: Path,
    forecast_phys: torch.Tensor,
    labels: list[str],
    grid: Grid,
    init: pd.Timestamp,
    leads: list[int],
    attrs: dict,
) -> None:
    members = np.arange(forecast_phys.shape[1], dtype=np.int32)
    deltas = pd.to_timedelta(leads, unit="h").to_numpy()
    ds = to_dataset(forecast_phys, labels, grid, {LEAD: deltas, REALIZATION: members})
    ds = ds.expand_dims({TIME: [init.to_datetime64()]})
    ds[TIME].attrs["long_name"] = "initial time"
    ds.attrs.update(Conventions="CF-1.8", **attrs)
    write_dataset(ds, path, overwrite=True)


def score_forecast(
    forecast_phys: np.ndarray,
    truth_phys: list[np.ndarray | None],
    climatology: np.ndarray,
    weights: np.ndarray,
) -> dict[str, np.ndarray]:
    """Scores ``(lead, channel)`` in physical units; NaN where the truth does not reach."""
    leads, members, channels = forecast_phys.shape[:3]
    out = {name: np.full((leads, channels), np.nan) for name in SCORES}
    for k, truth in enumerate(truth_phys):
        if truth is None:
            continue
        ens = forecast_phys[k]
        mean = ens.mean(axis=0)
        out["rmse"][k] = np.sqrt(metrics.mse(mean, truth, weights))
        out["bias"][k] = metrics.bias(mean, truth, weights)
        out["acc"][k] = metrics.acc(mean, truth, climatology, weights)
        if members > 1:
            out["spread"][k] = metrics.ensemble_spread(ens, weights)
            out["crps"][k] = metrics.crps(ens, truth, weights)
    return out


def write_forecast_scores(path: Path, rows: list[dict], labels: list[str], leads: list[int]) -> None:
    """forecast_scores.nc: ``<score> (time, prediction_timedelta, channel)``, time = initial time."""
    times = [pd.Timestamp(r["time"]).to_datetime64() for r in rows]
    data = {
        f"forecast_{name}": ((TIME, LEAD, "channel"), np.stack([r[name] for r in rows])) for name in SCORES
    }
    coords = {TIME: times, LEAD: pd.to_timedelta(leads, unit="h").to_numpy(), "channel": labels}
    comment = (
        "forecasts from analyses scored against the truth, area-weighted (weights of mean 1), physical "
        "units; rmse/bias/acc of the ensemble mean; spread and CRPS for ensembles (NaN otherwise)"
    )
    write_scores_dataset(path, data, coords, comment)


def read_forecast_scores(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    return [
        {"time": pd.Timestamp(t), **{name: ds[f"forecast_{name}"].values[i] for name in SCORES}}
        for i, t in enumerate(ds[TIME].values)
    ]
