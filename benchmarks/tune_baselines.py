"""Parameter sweep of the baselines on short cycles: 3D-Var's B, the LETKF's RTPS/inflation/localisation.

    python benchmarks/tune_baselines.py [--days 10] [--fraction 0.05] [--runs-dir benchmarks/tune-runs]

Each trial cycles from 2018-01-01 on the embedded nature run with the shipped forecast model
(complete runs in --runs-dir are reused). Prints per trial the analysis RMSE over the second
half of the cycle (after the cold-start transient), O−A RMS in units of σ_o, and for the
LETKF the spread–skill ratio. The 3D-Var defaults (ensemble B, b_scale 1.5, localisation
1500 km) and the LETKF defaults (localisation 1500 km, channel localisation by displaced
correlations, RTPS 0.1, additive 0.5, 40 members; the last two from 30-day runs, --days 30)
were chosen from this table.
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

sys.path.insert(0, str(Path(__file__).parent))
from cycle_baselines import run_or_reuse, summarise

# (method, parameters, members or None for the method's default ensemble size)
TRIALS = [
    ("none", {}, None),
    # 3D-Var with the Gaussian B (one horizontal length, channels correlated only at a point).
    ("3dvar", {"covariance": "gaussian", "b_scale": 1.0}, None),
    ("3dvar", {"covariance": "gaussian", "b_scale": 1.5}, None),
    ("3dvar", {"covariance": "gaussian", "b_scale": 2.5}, None),
    ("3dvar", {"covariance": "gaussian", "b_scale": 4.0}, None),
    ("3dvar", {"covariance": "gaussian", "b_scale": 2.5, "length_scale_km": 800.0}, None),
    # 3D-Var with the localised climatological-ensemble B (240 training-set 24-h errors).
    ("3dvar", {"covariance": "ensemble", "b_scale": 1.0, "localization_km": 1500.0}, None),
    ("3dvar", {"covariance": "ensemble", "b_scale": 1.5, "localization_km": 1500.0}, None),
    ("3dvar", {"covariance": "ensemble", "b_scale": 2.5, "localization_km": 1500.0}, None),
    ("3dvar", {"covariance": "ensemble", "b_scale": 1.5, "localization_km": 1000.0}, None),
    ("3dvar", {"covariance": "ensemble", "b_scale": 1.5, "localization_km": 2500.0}, None),
    # LETKF, one set of weights per column (the first version): spread collapses.
    ("enkf", {"rtps": 0.5, "additive": 0.0, "channel_localization": "none"}, 20),
    ("enkf", {"rtps": 0.5, "additive": 0.5, "channel_localization": "none"}, 20),
    ("enkf", {"rtps": 0.5, "additive": 1.0, "channel_localization": "none"}, 20),
    ("enkf", {"rtps": 0.5, "additive": 0.0, "channel_localization": "none", "localization_km": 800.0}, 20),
    ("enkf", {"rtps": 0.5, "additive": 0.35, "channel_localization": "none", "localization_km": 500.0}, 20),
    ("enkf", {"rtps": 0.5, "additive": 0.2, "channel_localization": "none", "localization_km": 800.0}, 40),
    # With channel localisation by B's cross-channel correlations.
    ("enkf", {"rtps": 0.5, "additive": 0.2, "localization_km": 800.0}, 20),
    ("enkf", {"rtps": 0.5, "additive": 0.2, "localization_km": 1100.0}, 20),
    ("enkf", {"rtps": 0.5, "additive": 0.3, "localization_km": 1100.0}, 20),
    ("enkf", {"rtps": 0.7, "additive": 0.2, "localization_km": 1100.0}, 20),
    ("enkf", {"rtps": 0.5, "additive": 0.3, "localization_km": 1500.0}, 20),
    # The defaults until 2026-12-02; since, trial 22 draws its additive inflation from the samples too.
    ("enkf", {"rtps": 0.5, "additive": 0.2, "localization_km": 1500.0}, 40),
    # Additive draws from the training-set error samples' covariance instead of the Gaussian B.
    ("enkf", {"rtps": 0.5, "additive": 0.2, "localization_km": 1500.0, "additive_covariance": "samples"}, 40),
    # Hybrid gain (Penny 2014): a 3D-Var with the ensemble B refines the LETKF mean.
    ("hybrid-gain", {"additive_covariance": "samples", "hybrid_weight": 0.5}, 40),
    ("hybrid-gain", {"additive_covariance": "samples", "hybrid_weight": 1.0}, 40),
    ("hybrid-gain", {"additive_covariance": "samples", "hybrid_weight": 0.5, "hybrid_b_scale": 1.5}, 40),
    # The under-dispersed wind channels (spread/skill ~0.6 at 5 %): inflate per channel.
    ("enkf", {"additive_covariance": "samples", "adaptive_inflation": True}, 40),
    ("enkf", {"additive_covariance": "samples", "additive": 0.3, "rtps": 0.7}, 40),
    ("enkf", {"additive_covariance": "samples", "localization_km": 1000.0}, 40),
    ("hybrid-gain", {"additive_covariance": "samples", "adaptive_inflation": True, "hybrid_weight": 1.0}, 40),
    ("enkf", {"additive_covariance": "samples", "adaptive_inflation": True, "localization_km": 2000.0}, 40),
    (
        "enkf",
        {"additive_covariance": "samples", "adaptive_inflation": True, "channel_localization": "none"},
        40,
    ),
    ("enkf", {"additive_covariance": "samples", "adaptive_inflation": True, "localization_km": 2500.0}, 40),
    ("enkf", {"additive_covariance": "samples", "adaptive_inflation": True}, 80),
    ("hybrid-gain", {"additive_covariance": "samples", "hybrid_weight": 1.0, "hybrid_b_scale": 1.5}, 40),
    # Trial 23 with adaptive inflation spelled out off (it was briefly the default): the 30-day enkf default.
    ("enkf", {"additive_covariance": "samples", "adaptive_inflation": False}, 40),
    # Hybrid 3DEnVar mean (static B blended with the members' localised covariance), LETKF members.
    ("envar", {"envar_weight": 0.5, "hybrid_b_scale": 1.5}, 40),
    ("envar", {"envar_weight": 0.75, "hybrid_b_scale": 1.5}, 40),
    ("envar", {"envar_weight": 0.3, "hybrid_b_scale": 1.5}, 40),
    # With the two-frame forecast model (2026-12-05): the LETKF's spread and localisation retuned.
    ("enkf", {"additive_covariance": "samples", "additive": 0.3}, 40),
    ("enkf", {"additive_covariance": "samples", "additive": 0.3, "rtps": 0.3}, 40),
    ("enkf", {"additive_covariance": "samples", "localization_km": 2000.0}, 40),
    ("enkf", {"additive_covariance": "samples", "rtps": 0.7}, 40),
    # Channel localisation that keeps height-wind balance (displaced correlations, not at a point).
    ("enkf", {"additive_covariance": "samples", "channel_localization": "neighbourhood"}, 40),
    (
        "enkf",
        {
            "additive_covariance": "samples",
            "channel_localization": "neighbourhood",
            "channel_localization_km": 2500.0,
        },
        40,
    ),
    (
        "enkf",
        {"additive_covariance": "samples", "channel_localization": "neighbourhood", "additive": 0.3},
        40,
    ),
    (
        "enkf",
        {"additive_covariance": "samples", "channel_localization": "neighbourhood", "additive": 0.4},
        40,
    ),
    ("enkf", {"additive_covariance": "samples", "channel_localization": "optimal"}, 40),
    ("enkf", {"additive_covariance": "samples", "channel_localization": "optimal", "additive": 0.3}, 40),
    (
        "enkf",
        {"additive_covariance": "samples", "channel_localization": "neighbourhood", "additive": 0.5},
        40,
    ),
    ("enkf", {"additive_covariance": "samples", "channel_localization": "optimal", "additive": 0.4}, 40),
    ("enkf", {"channel_localization": "neighbourhood", "additive": 0.4, "rtps": 0.3}, 40),
    ("enkf", {"channel_localization": "neighbourhood", "additive": 0.5, "rtps": 0.3}, 40),
    ("enkf", {"channel_localization": "neighbourhood", "additive": 0.5, "rtps": 0.1}, 40),
    # 3D-Var on sparse networks (1 % columns), where the 5 % B scale lets the error grow.
    ("3dvar", {"b_scale": 2.5}, None),
    ("3dvar", {"adaptive_variance": True}, None),
]
SHOW = ("z500", "t850", "u250", "msl")
# The LETKF trials (enkf and its hybrids) before this one name only what differs from the defaults of their day, which
# they keep: channel localisation at a point ("correlation") and additive inflation 0.2.
FIRST_NEIGHBOURHOOD_TRIAL = 44
DEFAULTS_BEFORE = {"channel_localization": "correlation", "additive": 0.2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=10)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--runs-dir", type=Path, default=Path("benchmarks/tune-runs"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", default=None, help="run only these trial numbers (0-based)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    half = int(args.days * 4) // 2
    print(
        f"tune_baselines — {date.today()} — {platform.machine()}, {torch.get_num_threads()} torch threads; "
        f"{args.days:g}-day cycles from 2018-01-01, {args.fraction:.0%} columns; RMSE over windows {half + 1}+"
    )
    print(
        f"{'trial':100} "
        + " ".join(f"{'a-RMSE ' + c:>12}" for c in SHOW)
        + "  O-A/σo (same order)   spread/skill"
    )
    for number, (method, params, members) in enumerate(TRIALS):
        if args.only is not None and str(number) not in args.only:
            continue
        label = (f"{method} {params}" if params else method) + (f" N={members}" if members else "")
        if method in ("enkf", "envar", "hybrid-gain") and number < FIRST_NEIGHBOURHOOD_TRIAL:
            params = {**DEFAULTS_BEFORE, **params}
        name = f"{method}-{args.fraction:g}-{args.days:g}d-" + "-".join(f"{k}{v}" for k, v in params.items())
        name += f"-m{members}" if members else ""
        cfg = {
            "run": {"start": "2018-01-01", "days": args.days, "name": name, "runs_dir": str(args.runs_dir)},
            "method": {"name": method, "params": params},
            "observations": {"networks": [{"kind": "columns", "fraction": args.fraction}]},
            **({"ensemble": {"members": members}} if members else {}),
        }
        run_dir = run_or_reuse(cfg, progress=False)
        r = summarise(run_dir)
        idx = [r["labels"].index(c) for c in SHOW]
        with xr.open_dataset(run_dir / "scores.nc") as scores:
            rmse = np.sqrt((scores["analysis_rmse"].isel(time=slice(half, None)) ** 2).mean("time")).values
        ss = "" if r["spread_skill"] is None else " ".join(f"{r['spread_skill'][i]:.2f}" for i in idx)
        print(
            f"{label:100} "
            + " ".join(f"{rmse[i]:12.4g}" for i in idx)
            + "  "
            + " ".join(f"{r['oma'][i]:.2f}" for i in idx)
            + "   "
            + ss
        )


if __name__ == "__main__":
    main()
