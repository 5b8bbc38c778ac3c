"""Parallel efficiency of ``cycler sweep``: the same 8 runs on 1 and on 2 LocalCluster workers.

    python benchmarks/sweep_scaling.py [--days 10] [--workers 1 2] [--runs-dir /tmp/sweep-scaling]

The sweep: 3dvar and enkf × 1 % and 5 % of columns × starts 2018-01-01 and 2018-02-01, 10 days
each, one torch thread per run (``configs/3dvar.yaml`` as the base). Each worker count runs the
sweep afresh in its own directory. Printed per worker count: wall time and efficiency
T1 / (W · T_W); then whether the runs of every worker count have the same analyses (they must:
a run's result does not depend on where it ran).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from cycler_da.sweep import cluster, expand, load_sweep, run_sweep

BASE = Path(__file__).parents[1] / "configs" / "3dvar.yaml"


def sweep_file(directory: Path, days: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    sweep = {
        "name": "scaling",
        "base": str(BASE),
        "runs_dir": str(directory),
        "set": {"run.days": days},
        "axes": {
            "method": [{"name": "3dvar", "params": {"b_scale": 1.5}}, {"name": "enkf"}],
            "observations.networks[0].fraction": [0.01, 0.05],
            "run.start": ["2018-01-01", "2018-02-01"],
        },
        "threads": 1,
    }
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def analysis_rmse(run_dir: Path) -> np.ndarray:
    with xr.open_dataset(run_dir / "scores.nc") as scores:
        return scores["analysis_rmse"].values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/sweep-scaling"))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(
        f"sweep_scaling — {date.today()} — {platform.machine()} ({platform.processor() or 'cpu'}), {cores} cores; "
        f"8 runs of {args.days:g} days (3dvar, enkf × 1 %, 5 % × 2 starts), 1 torch thread per run"
    )
    walls, results = {}, {}
    for workers in args.workers:
        runs = expand(load_sweep(sweep_file(args.runs_dir / f"{workers}-workers", args.days)))
        began = time.perf_counter()
        with cluster(None, workers, 1, dashboard=":0") as client:
            failed = run_sweep(client, runs, threads=1, progress=False)
        walls[workers] = time.perf_counter() - began
        if failed:
            raise SystemExit(f"runs failed on {workers} workers: {failed}")
        results[workers] = {run.name: analysis_rmse(run.run_dir) for run in runs}
    print(f"\n{'workers':>8} {'wall (s)':>10} {'speed-up':>9} {'efficiency':>11}")
    first = args.workers[0]
    for workers, wall in walls.items():
        speedup = walls[first] * first / wall
        print(f"{workers:8d} {wall:10.1f} {speedup:9.2f} {speedup / workers:11.1%}")
    same = all(
        np.array_equal(results[first][name], results[w][name])
        for w in args.workers
        for name in results[first]
    )
    print(f"\nanalyses identical across worker counts: {same}")


if __name__ == "__main__":
    main()
