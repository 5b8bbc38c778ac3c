"""Wall time and peak memory of ``cycler verify`` on existing runs (e.g. cycle_baselines' runs).

    python benchmarks/verify_speed.py RUN RUN [--plots DIR]

Runs the CLI in a child process with plots, without, and with --no-fields, each `--repeats`
times, and prints the median seconds and the peak resident memory.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"verify_speed — {date.today()} — {platform.machine()}; runs: {' '.join(args.runs)}")
    with tempfile.TemporaryDirectory() as plots:
        for label, extra in (
            ("tables + plots", ["--plots", plots]),
            ("tables", []),
            ("--no-fields", ["--no-fields"]),
        ):
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            times = []
            for _ in range(args.repeats):
                began = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "from cycler_da.cli import app; app()",
                        "verify",
                        *args.runs,
                        *extra,
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                times.append(time.perf_counter() - began)
            peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
            print(
                f"  {label:15} {statistics.median(times):6.1f} s (median of {args.repeats})   "
                f"peak RSS so far {peak:6.0f} MB"
            )


if __name__ == "__main__":
    main()
