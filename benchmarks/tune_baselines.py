"""Parameter sweep of the baselines on short cycles: 3D-Var's b_scale, the LETKF's RTPS/inflation/localisation.

    python benchmarks/tune_baselines.py [--days 10] [--fraction 0.05] [--runs-dir benchmarks/tune-runs]

Each trial cycles from 2018-01-01 on the embedded nature run with the shipped forecast model
(complete runs in --runs-dir are reused). Prints per trial the analysis RMSE over the second
half of the cycle (after the cold-start transient), O−A RMS in units of σ_o, and for the
LETKF the spread–skill ratio. The 3D-Var default b_scale (2.5) was chosen from this table.
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from cycler_da.config import parse_config
from cycler_da.driver import run_cycle
from cycler_da.run_config import RunConfig

sys.path.insert(0, str(Path(__file__).parent))
from cycle_baselines import summarise

TRIALS = [
    ("none", {}),
    ("3dvar", {"b_scale": 1.0}),
    ("3dvar", {"b_scale": 1.5}),
    ("3dvar", {"b_scale": 2.5}),
    ("3dvar", {"b_scale": 4.0}),
    ("enkf", {"rtps": 0.5}),
    ("enkf", {"rtps": 0.9}),
    ("enkf", {"rtps": 0.9, "inflation": 1.1}),
    ("enkf", {"rtps": 0.95, "localization_km": 1000.0}),
    ("enkf", {"rtps": 0.0, "localization_km": 2500.0}),
]
SHOW = ("z500", "t850", "u250", "msl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=10)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--runs-dir", type=Path, default=Path("benchmarks/tune-runs"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    half = int(args.days * 4) // 2
    print(f"tune_baselines — {date.today()} — {platform.machine()}, {torch.get_num_threads()} torch threads; "
          f"{args.days:g}-day cycles from 2018-01-01, {args.fraction:.0%} columns; RMSE over windows {half + 1}+")  # fmt: skip
    print(
        f"{'trial':42} "
        + " ".join(f"{'a-RMSE ' + c:>12}" for c in SHOW)
        + "  O-A/σo (same order)   spread/skill"
    )
    for method, params in TRIALS:
        name = f"{method}-{args.fraction:g}-{args.days:g}d-" + "-".join(f"{k}{v}" for k, v in params.items())
        run_dir = args.runs_dir / name
        if not (run_dir / "run.json").exists() or '"complete"' not in (run_dir / "run.json").read_text():
            cfg = parse_config(
                {
                    "run": {
                        "start": "2018-01-01",
                        "days": args.days,
                        "name": name,
                        "runs_dir": str(args.runs_dir),
                    },
                    "method": {"name": method, "params": params},
                    "observations": {"networks": [{"kind": "columns", "fraction": args.fraction}]},
                },
                RunConfig,
            )
            run_cycle(cfg, resume=(run_dir / "run.json").exists(), progress=False)
        r = summarise(run_dir)
        idx = [r["labels"].index(c) for c in SHOW]
        scores = xr.open_dataset(run_dir / "scores.nc").isel(time=slice(half, None))
        rmse = np.sqrt((scores["analysis_rmse"] ** 2).mean("time")).values
        ss = "" if r["spread_skill"] is None else " ".join(f"{r['spread_skill'][i]:.2f}" for i in idx)
        label = f"{method} {params}" if params else method
        print(f"{label:42} " + " ".join(f"{rmse[i]:12.4g}" for i in idx) + "  "
              + " ".join(f"{r['oma'][i]:.2f}" for i in idx) + "   " + ss)  # fmt: skip


if __name__ == "__main__":
    main()
