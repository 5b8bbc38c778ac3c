"""Replays the divergence guard over finished runs: which windows would it have flagged?

    python benchmarks/guard_replay.py RUN_DIR [RUN_DIR ...]

For runs made on the default truth and forecast model (their B and normalisation ship with
the package), every window's background, analysis and observations are read back from the
run directory and passed to :func:`cycler_da.guard.check` with the default bounds, together
with the method's diagnostics from ``scores.nc``. Prints, per run, the windows checked and
those flagged with the reason. The files hold float32 physical values, so this is the guard
on what was written, not on the method's raw output.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import xarray as xr

from cycler_da import guard, nature
from cycler_da.config import load_config
from cycler_da.core import Observations
from cycler_da.run_config import GuardSection, RunConfig
from cycler_da.run_io import read_state
from cycler_da.state import Grid
from cycler_da.statistics_cache import TrainingErrors, truth_norm_stats
from forecast_models.checkpoint import file_hash, resolve_checkpoint
from observation_ops.operator import PointObservationOperator


def replay(run_dir: Path) -> tuple[int, dict[str, str]]:
    config = load_config(run_dir / "config.yaml", RunConfig)
    labels, period = list(config.channels), config.truth.train_period
    n = config.truth.nature
    key = nature.NatureSpec(n.resolution, n.seed, n.compiled).key
    stats = truth_norm_stats(None, labels, period, key)
    sha = file_hash(resolve_checkpoint(config.forecast.checkpoint))
    b_std = TrainingErrors(None, labels, period, stats, None, sha, key).statistics().std
    bounds = GuardSection()
    scores = xr.open_dataset(run_dir / "scores.nc")
    flagged, paths = {}, sorted((run_dir / "analysis").glob("*.nc"))
    for path in paths:
        with xr.open_dataset(run_dir / "observations" / path.name) as table:
            grid = Grid.from_dataset(xr.open_dataset(path))
            used = table["qc_flag"].values == 0
            c = np.asarray([labels.index(str(ch)) for ch in table["channel"].values[used]])
            operator = PointObservationOperator(
                c,
                table["latitude"].values[used],
                table["longitude"].values[used],
                grid.latitudes,
                grid.longitudes,
            )
            values = (table["value"].values[used] - stats.mean[c]) / stats.std[c]
            error_std = table["error_std"].values[used] / stats.std[c]
        observations = SimpleNamespace(
            used=Observations(torch.as_tensor(values), torch.as_tensor(error_std), operator)
        )
        x_b = stats.normalise(read_state(run_dir / "background" / path.name, labels))
        x_a = stats.normalise(read_state(path, labels))
        row = scores.sel(time=xr.open_dataset(path)["time"].values[0])
        diagnostics = {
            k.removeprefix("method_"): float(row[k]) for k in scores.data_vars if k.startswith("method_")
        }
        reason = guard.check(
            x_b, x_a, observations, diagnostics, b_std, bounds.max_increment, bounds.max_fit_ratio
        )
        if reason is not None:
            flagged[path.stem] = reason
    return len(paths), flagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    bounds = GuardSection()
    print(
        f"guard_replay: default bounds, max_increment {bounds.max_increment:g}, max_fit_ratio {bounds.max_fit_ratio:g}"
    )
    for run_dir in args.runs:
        checked, flagged = replay(run_dir)
        print(f"{run_dir.name:40} {checked:4d} windows checked, {len(flagged)} flagged")
        for stamp, reason in flagged.items():
            print(f"    {stamp}: {reason}")


if __name__ == "__main__":
    main()
