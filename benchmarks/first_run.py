"""The first run on an empty data directory, as a new user meets it.

    python benchmarks/first_run.py [--method lo-sda] [--days 1 30] [--threads 2]

Each row runs ``cycler run --start 2018-01-01 --days N --method M`` in a fresh process with a
fresh, empty ``$CYCLER_DATA_DIR`` (so the nature run is integrated for the months the run
covers, and every training-period statistic comes from the package), and reports its wall
time, measured outside the process, and the run's z500 / t850 analysis RMSE. The targets of
issue 27: a 1-day LO-SDA run within 2 minutes, a 30-day one within 12 minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import xarray as xr


def first_run(method: str, days: float, threads: int, work: Path) -> tuple[float, dict]:
    """(wall seconds, {channel: analysis RMSE}) of one run from nothing."""
    data = work / f"data-{method}-{days:g}"
    env = os.environ | {"CYCLER_DATA_DIR": str(data)}
    command = [
        str(Path(sys.executable).parent / "cycler"),
        "run",
        "--start",
        "2018-01-01",
        "--days",
        f"{days:g}",
    ]
    command += ["--method", method, "--runs-dir", str(work / "runs"), "--threads", str(threads)]
    command += ["--name", f"{method}-{days:g}d"]
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - began
    with xr.open_dataset(work / "runs" / f"{method}-{days:g}d" / "scores.nc") as scores:
        rmse = np.sqrt((scores["analysis_rmse"] ** 2).mean("time"))
        return seconds, {c: float(rmse.sel(channel=c)) for c in ("z500", "t850")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lo-sda")
    parser.add_argument("--days", type=float, nargs="+", default=[1, 30])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(
        f"first_run — {date.today()} — {platform.machine()} ({platform.processor() or 'cpu'}), "
        f"{os.cpu_count()} cores, {args.threads} torch threads; empty data directory per row"
    )
    print(f"{'method':10} {'days':>5} {'wall (min)':>11} {'z500 a-RMSE':>12} {'t850 a-RMSE':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for days in args.days:
            seconds, rmse = first_run(args.method, days, args.threads, Path(tmp))
            print(
                f"{args.method:10} {days:5g} {seconds / 60:11.2f} {rmse['z500']:12.4g} {rmse['t850']:12.4g}"
            )


if __name__ == "__main__":
    main()
