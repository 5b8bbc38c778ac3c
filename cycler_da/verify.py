"""``cycler verify``: side-by-side scores of runs, read from their run directories only.

Everything comes from the run-directory layout (docs/architecture.md): ``scores.nc`` (per window),
``forecast_scores.nc`` (per forecast and lead), the analysis/background files (increments and
physical balance) and, for bias maps, the truth named in ``run.json``/``config.yaml``.
Period RMSEs are sqrt(time-mean MSE) (WeatherBench 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr
import yaml

from cycler_da import metrics
from cycler_da.core.channels import TIME
from cycler_da.state import Grid

LEAD = "prediction_timedelta"


class VerifyError(ValueError):
    """A run that cannot be read, or runs that cannot be compared."""


@dataclass
class Run:
    path: Path
    config: dict
    status: dict
    scores: xr.Dataset
    forecasts: xr.Dataset | None
    grid: Grid
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        return str(self.config["method"]["name"])

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self.scores["channel"].values]


def load_run(path: str | Path) -> Run:
    path = Path(path)
    missing = [n for n in ("config.yaml", "run.json", "scores.nc") if not (path / n).exists()]
    if missing:
        raise VerifyError(f"{path} is not a cycler run directory: it lacks {', '.join(missing)}")
    config = yaml.safe_load((path / "config.yaml").read_text())
    status = json.loads((path / "run.json").read_text())
    scores = _load(path / "scores.nc")
    forecast_path = path / "forecast_scores.nc"
    forecasts = _load(forecast_path) if forecast_path.exists() else None
    first = next(iter(sorted((path / "analysis").glob("*.nc"))), None)
    if first is None:
        raise VerifyError(f"{path} has no analysis files")
    with xr.open_dataset(first) as ds:
        grid = Grid.from_dataset(ds)
    return Run(path, config, status, scores, forecasts, grid)


def _load(path: Path) -> xr.Dataset:
    """Reads a file into memory and closes it (netCDF4 handles left open in xarray's file
    cache have crashed later opens in the same process)."""
    with xr.open_dataset(path) as ds:
        return ds.load()


def _truth_key(run: Run) -> str:
    truth = run.config["truth"]
    if truth["source"] == "nature":
        nature = truth["nature"]
        return f"nature {nature['resolution']} seed {nature['seed']} ({'compiled' if nature['compiled'] else 'eager'})"
    return f"dataset {truth['path']}"


def align(runs: list[Run], common: bool = False) -> list[Run]:
    """Checks that runs are comparable; with `common`, restricts them to their common windows."""
    first = runs[0]
    for run in runs[1:]:
        if not run.grid.same_as(first.grid):
            raise VerifyError(
                f"{run.name} and {first.name} are on different grids ({run.grid.shape} vs {first.grid.shape})"
            )
        if _truth_key(run) != _truth_key(first):
            raise VerifyError(
                f"{run.name} and {first.name} verify against different truths: "
                f"{_truth_key(run)} vs {_truth_key(first)}"
            )
        if run.labels != first.labels:
            raise VerifyError(
                f"{run.name} and {first.name} have different channels: {run.labels} vs {first.labels}"
            )
    times = [pd.DatetimeIndex(r.scores[TIME].values) for r in runs]
    shared = times[0]
    for t in times[1:]:
        shared = shared.intersection(t)
    if all(len(t) == len(shared) for t in times):
        return runs
    if not common:
        spans = "; ".join(
            f"{r.name}: {t[0]:%Y-%m-%d %H}h to {t[-1]:%Y-%m-%d %H}h ({len(t)} windows)"
            for r, t in zip(runs, times, strict=True)
        )
        raise VerifyError(
            f"the runs cover different windows ({spans}); pass --common to compare "
            f"them on their {len(shared)} common windows"
        )
    if len(shared) == 0:
        raise VerifyError("the runs have no window in common")
    for run in runs:
        run.scores = run.scores.sel({TIME: shared})
        if run.forecasts is not None:
            inits = pd.DatetimeIndex(run.forecasts[TIME].values).intersection(shared)
            run.forecasts = run.forecasts.sel({TIME: inits})
    return runs


def _rmse(da: xr.DataArray) -> xr.DataArray:
    return np.sqrt((da**2).mean(TIME))


def summary(run: Run) -> dict:
    """The machine-readable summary of one run (the ``--json`` schema, documented in the README)."""
    s = run.scores
    out = {
        "run": str(run.path),
        "method": run.method,
        "members": int(run.config["ensemble"]["members"]),
        "windows": int(s.sizes[TIME]),
        "first_window": f"{pd.Timestamp(s[TIME].values[0]):%Y-%m-%dT%H}",
        "last_window": f"{pd.Timestamp(s[TIME].values[-1]):%Y-%m-%dT%H}",
        "analysis_rmse": dict(
            zip(run.labels, _rmse(s["analysis_rmse"]).values.round(6).tolist(), strict=True)
        ),
        "background_rmse": dict(
            zip(run.labels, _rmse(s["background_rmse"]).values.round(6).tolist(), strict=True)
        ),
        "forecast_rmse": {},
        # Windows whose analysis the divergence guard replaced (scores from before the guard have none).
        "flagged_windows": [f"{pd.Timestamp(t):%Y-%m-%dT%H}" for t in s[TIME].values[s["flagged"].values > 0]]
        if "flagged" in s
        else [],
    }
    if run.forecasts is not None and run.forecasts.sizes[TIME]:
        rmse = np.sqrt((run.forecasts["forecast_rmse"] ** 2).mean(TIME, skipna=True))
        hours = (run.forecasts[LEAD].values / np.timedelta64(1, "h")).astype(int)
        out["forecast_rmse"] = {
            label: {
                str(h): round(float(v), 6) for h, v in zip(hours, rmse.sel(channel=label).values, strict=True)
            }
            for label in run.labels
        }
    if out["members"] > 1:
        ratio = np.sqrt((out["members"] + 1) / out["members"]) * np.sqrt(
            (s["background_spread"] ** 2).mean(TIME) / (s["background_rmse"] ** 2).mean(TIME)
        )
        out["spread_skill"] = dict(zip(run.labels, ratio.values.round(4).tolist(), strict=True))
    out.update(run.extra)
    return out


def scorecard(runs: list[Run], leads: tuple[int, ...] = (24, 72, 120)) -> list[dict]:
    """Each run against the first: % change of RMSE and the autocorrelation-aware paired p-value."""
    ref = runs[0]
    rows = []
    for run in runs[1:]:
        for label in ref.labels:
            a = run.scores["analysis_rmse"].sel(channel=label).values ** 2
            b = ref.scores["analysis_rmse"].sel(channel=label).values ** 2
            _, p = metrics.paired_test(a, b)
            row = {
                "run": run.name,
                "channel": label,
                "analysis": (100 * (np.sqrt(a.mean() / b.mean()) - 1), p),
            }
            if run.forecasts is not None and ref.forecasts is not None:
                inits = pd.DatetimeIndex(run.forecasts[TIME].values).intersection(ref.forecasts[TIME].values)
                for hours in leads:
                    lead = np.timedelta64(hours, "h")
                    if lead not in ref.forecasts[LEAD].values or lead not in run.forecasts[LEAD].values:
                        continue
                    fa = (
                        run.forecasts["forecast_rmse"].sel({TIME: inits, LEAD: lead, "channel": label}).values
                        ** 2
                    )
                    fb = (
                        ref.forecasts["forecast_rmse"].sel({TIME: inits, LEAD: lead, "channel": label}).values
                        ** 2
                    )
                    ok = np.isfinite(fa) & np.isfinite(fb)
                    if ok.sum() >= 2:
                        _, p = metrics.paired_test(fa[ok], fb[ok])
                        row[f"{hours}h"] = (100 * (np.sqrt(fa[ok].mean() / fb[ok].mean()) - 1), p)
            rows.append(row)
    return rows


def scores_dataset(runs: list[Run]) -> xr.Dataset:
    """All runs' per-window and per-lead scores stacked along a ``run`` dimension."""
    per_window = xr.concat([r.scores.expand_dims(run=[r.name]) for r in runs], dim="run", join="outer")
    parts = [per_window]
    with_forecasts = [r for r in runs if r.forecasts is not None]
    if with_forecasts:
        f = xr.concat(
            [r.forecasts.expand_dims(run=[r.name]) for r in with_forecasts], dim="run", join="outer"
        )
        parts.append(f.rename({TIME: "forecast_initial_time"}))
    ds = xr.merge(parts, compat="override")
    ds.attrs.update(
        Conventions="CF-1.8",
        comment="cycler verify: scores of the runs along 'run'; physical units; area weights of mean 1",
    )
    return ds


def _open_truth(run: Run) -> xr.Dataset | None:
    """The run's truth on its grid, or None when it cannot be opened (bias maps are then skipped)."""
    from cycler_da import nature
    from cycler_da.regrid import regrid
    from cycler_da.sources import open_dataset

    times = pd.DatetimeIndex(run.scores[TIME].values)
    truth = run.config["truth"]
    try:
        if truth["source"] == "nature":
            n = truth["nature"]
            spec = nature.NatureSpec(n["resolution"], n["seed"], n["compiled"])
            ds = nature.open_nature(times[0], times[-1], spec, progress=False)
        else:
            ds = open_dataset(truth["path"])
        # Only the run's windows, read in this thread: dask worker threads reading netCDF4
        # beside other netCDF4 use have crashed HDF5.
        with dask.config.set(scheduler="synchronous"):
            ds = ds.sel({TIME: times}).load()
    except (OSError, ValueError, KeyError) as err:
        print(f"note: no bias maps for {run.name}: its truth cannot be read ({err})")
        return None
    return ds if Grid.from_dataset(ds).same_as(run.grid) else regrid(ds, run.grid)


def field_diagnostics(run: Run) -> dict:
    """Mean increment and analysis-bias maps, increment spectra and physical balance per window.

    Reads the analysis and background files (ensemble means). Balance
    (:meth:`cycler_da.core.balance.Balance.residual_rms`, the residuals Align-DA and PhyDA use):
    RMS ageostrophic wind and RMS thermal-wind residual outside 15° of the equator (m/s), RMS
    hypsometric residual of every layer (m² s⁻²), of the analyses, the increments and the truth.
    """
    import torch

    from cycler_da.core.balance import TERMS, Balance
    from cycler_da.run_io import read_state, stamp
    from cycler_da.state import to_tensor

    labels = run.labels
    weights = run.grid.area_weights()
    truth_ds = _open_truth(run)
    times = pd.DatetimeIndex(run.scores[TIME].values)
    increment_sum = np.zeros((len(labels), *run.grid.shape))
    bias_sum = np.zeros_like(increment_sum) if truth_ds is not None else None
    spectrum_sum = np.zeros((len(labels), run.grid.shape[1] // 2 + 1))
    kinds = ("analysis", "increment", "truth")
    balance: dict[str, list[float]] = {f"{b}_{k}": [] for b in TERMS for k in kinds}
    operators = Balance(labels, run.grid.latitudes)
    if truth_ds is not None:  # one conversion for every window; its times are the run's windows
        truth_all = to_tensor(truth_ds, labels).double().numpy()
    rank_sum = None
    for k, t in enumerate(times):
        a = read_state(run.path / "analysis" / f"{stamp(t)}.nc", labels).double().mean(0).numpy()
        b_members = read_state(run.path / "background" / f"{stamp(t)}.nc", labels).double().numpy()
        b = b_members.mean(0)
        inc = a - b
        increment_sum += inc
        spectrum_sum += metrics.zonal_power_spectrum(inc, weights)
        states = [("analysis", a), ("increment", inc)]
        if bias_sum is not None:
            truth = truth_all[k]
            bias_sum += a - truth
            states.append(("truth", truth))
            if b_members.shape[0] > 1:  # rank of the truth in the background ensemble, per channel
                ranks = [metrics.rank_histogram(b_members[:, c], truth[c]) for c in range(len(labels))]
                rank_sum = np.stack(ranks) if rank_sum is None else rank_sum + np.stack(ranks)
        for name, x in states:
            for term, value in operators.residual_rms(torch.as_tensor(x)).items():
                balance[f"{term}_{name}"].append(float(value))
    n = len(times)
    return {
        "mean_increment": increment_sum / n,
        "analysis_bias": None if bias_sum is None else bias_sum / n,
        "increment_spectrum": spectrum_sum / n,
        "balance": {k: np.asarray(v) for k, v in balance.items() if v},
        "rank_histogram": rank_sum,  # (channel, members + 1) counts, or None
        "times": times,
    }
