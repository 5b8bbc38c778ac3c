"""``cycler verify SWEEP_DIR``: the runs of a sweep pooled over start dates and seeds.

Runs whose resolved configs differ only in ``run.start`` and ``run.seed`` are one *setting*
(a method with its parameters, a density, ...). Each setting gets its RMSEs over all its
windows (sqrt of the mean MSE over every window of every start, as one long run would), its
forecast RMSE by lead and its spread/skill; each setting is then compared with the first on
the starts and seeds both have, window by window, with the paired test pooled over starts
(:func:`cycler_da.metrics.pooled_paired_test`), and the number of starts at which the sign of
the change is the same says whether a ranking holds across starts or was one period's luck.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cycler_da import metrics
from cycler_da.verify import LEAD, Run, VerifyError, align, load_run

POOLED = (("run", "start"), ("run", "seed"), ("run", "name"), ("run", "runs_dir"))


@dataclass
class Setting:
    """The runs of one setting, keyed by (start, seed)."""

    label: str
    runs: dict[tuple[str, int], Run]

    @property
    def method(self) -> str:
        return next(iter(self.runs.values())).method


def is_sweep(path: Path) -> bool:
    """A directory of run directories (not itself a run)."""
    return path.is_dir() and not (path / "run.json").exists() and any(path.glob("*/run.json"))


def _setting_config(run: Run) -> dict:
    config = copy.deepcopy(run.config)
    for section, key in POOLED:
        config.get(section, {}).pop(key, None)
    return config


def _flatten(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        out |= _flatten(value, f"{name}.") if isinstance(value, dict) else {name: json.dumps(value)}
    return out


def settings(sweep_dir: Path) -> list[Setting]:
    """The sweep's complete runs grouped into settings, in the order of their first run's name."""
    paths = sorted(p.parent for p in sweep_dir.glob("*/run.json"))
    runs = [load_run(p) for p in paths if json.loads((p / "run.json").read_text())["status"] == "complete"]
    if not runs:
        raise VerifyError(f"{sweep_dir} has no complete run")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(json.dumps(_setting_config(run), sort_keys=True, default=str), []).append(run)
    flat = [_flatten(json.loads(key)) for key in groups]
    everywhere = set.intersection(*(set(f) for f in flat))
    shown = sorted(k for k in everywhere if len({f[k] for f in flat}) > 1)
    result = []
    for members, values in zip(groups.values(), flat, strict=True):
        parts = [
            json.loads(values[k])
            if k.endswith(".name")
            else f"{k.rsplit('.', 1)[-1]}={json.loads(values[k])}"
            for k in shown
        ]
        keyed = {_start_seed(run): run for run in members}
        result.append(Setting(", ".join(map(str, parts)) or members[0].method, keyed))
    return result


def _start_seed(run: Run) -> tuple[str, int]:
    return f"{pd.Timestamp(run.config['run']['start']):%Y-%m-%dT%H}", int(run.config["run"]["seed"])


def _mse(run: Run, variable: str) -> np.ndarray:
    """(time, channel) area-weighted MSE per window."""
    return run.scores[variable].transpose(..., "channel").values ** 2


def pooled_summary(setting: Setting) -> dict:
    """RMSEs over every window of every start, forecast RMSE by lead, spread/skill."""
    runs = list(setting.runs.values())
    labels = runs[0].labels
    out: dict = {
        "setting": setting.label,
        "method": setting.method,
        "starts": sorted({start for start, _ in setting.runs}),
        "seeds": sorted({seed for _, seed in setting.runs}),
        "runs": [str(r.path) for r in runs],
        "windows": sum(int(r.scores.sizes["time"]) for r in runs),
    }
    for quantity in ("analysis", "background"):
        mse = np.concatenate([_mse(r, f"{quantity}_rmse") for r in runs])
        out[f"{quantity}_rmse"] = dict(zip(labels, np.sqrt(mse.mean(0)).round(6).tolist(), strict=True))
    with_forecasts = [r for r in runs if r.forecasts is not None and r.forecasts.sizes["time"]]
    if with_forecasts:
        leads = with_forecasts[0].forecasts[LEAD].values
        hours = (leads / np.timedelta64(1, "h")).astype(int)
        sq = np.concatenate(
            [
                r.forecasts["forecast_rmse"].transpose("time", LEAD, "channel").values ** 2
                for r in with_forecasts
            ]
        )
        rmse = np.sqrt(np.nanmean(sq, axis=0))
        out["forecast_rmse"] = {
            label: {str(h): round(float(rmse[j, i]), 6) for j, h in enumerate(hours)}
            for i, label in enumerate(labels)
        }
    members = int(runs[0].config["ensemble"]["members"])
    if members > 1:
        spread = np.concatenate([_mse(r, "background_spread") for r in runs])
        error = np.concatenate([_mse(r, "background_rmse") for r in runs])
        ratio = metrics.spread_skill(spread, error, members)
        out["spread_skill"] = dict(zip(labels, np.round(ratio, 4).tolist(), strict=True))
    return out


def _compare(ours: list[np.ndarray], theirs: list[np.ndarray]) -> dict:
    """% change of RMSE over all pairs, the pooled p-value, and at how many starts the change has
    that sign (ours/theirs: per start, the squared errors of paired windows)."""
    change = 100 * (np.sqrt(np.nanmean(np.concatenate(ours)) / np.nanmean(np.concatenate(theirs))) - 1)
    _, p = metrics.pooled_paired_test(ours, theirs)
    signs = [np.sign(np.nanmean(a) - np.nanmean(b)) for a, b in zip(ours, theirs, strict=True)]
    return {
        "rmse_change_percent": round(float(change), 3),
        "p_value": round(float(p), 4),
        "starts_same_sign": int(sum(sign == np.sign(change) for sign in signs)),
    }


def _forecast_mse(run: Run, init_times, lead, channel: str) -> np.ndarray:
    return (
        run.forecasts["forecast_rmse"].sel({"time": init_times, LEAD: lead, "channel": channel}).values ** 2
    )


def pooled_scorecard(settings: list[Setting], leads: tuple[int, ...] = (24, 72, 120)) -> list[dict]:
    """Each setting against the first, per channel, on the (start, seed) pairs both have:
    analysis and forecast RMSE change, pooled p-value, starts with the same sign."""
    reference = settings[0]
    rows = []
    for setting in settings[1:]:
        shared = sorted(set(setting.runs) & set(reference.runs))
        if not shared:
            continue
        pairs = [align([reference.runs[k], setting.runs[k]], common=True) for k in shared]
        for i, label in enumerate(pairs[0][0].labels):
            row = {"setting": setting.label, "channel": label, "starts": len(shared)}
            row["analysis"] = _compare(
                [_mse(run, "analysis_rmse")[:, i] for _, run in pairs],
                [_mse(ref, "analysis_rmse")[:, i] for ref, _ in pairs],
            )
            if all(ref.forecasts is not None and run.forecasts is not None for ref, run in pairs):
                for hours in leads:
                    lead = np.timedelta64(hours, "h")
                    if not all(lead in r.forecasts[LEAD].values for pair in pairs for r in pair):
                        continue
                    inits = [
                        pd.DatetimeIndex(ref.forecasts["time"].values).intersection(
                            run.forecasts["time"].values
                        )
                        for ref, run in pairs
                    ]
                    row[f"{hours}h"] = _compare(
                        [
                            _forecast_mse(run, t, lead, label)
                            for (_, run), t in zip(pairs, inits, strict=True)
                        ],
                        [
                            _forecast_mse(ref, t, lead, label)
                            for (ref, _), t in zip(pairs, inits, strict=True)
                        ],
                    )
            rows.append(row)
    return rows
