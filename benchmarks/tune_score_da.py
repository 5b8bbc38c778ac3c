"""Parameter sweep of dps, lo-sda and latent-3dvar on short cycles (the table their defaults were chosen from).

    python benchmarks/tune_score_da.py [--days 3] [--fraction 0.05] [--start 2018-01-01]
        [--runs-dir benchmarks/tune-runs] [--only 2 4 ...]

Each trial cycles from --start (2018-01-01; the trials before the state-space prior's were
chosen there, later ones on the validation months) on the embedded nature run with the shipped forecast model,
autoencoder and prior, one member, no forecasts (complete runs in --runs-dir are reused).
Prints per trial the analysis RMSE over all windows, O−A RMS in units of σ_o, the method's
χ²/m and the median wall time per window.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from datetime import date
from pathlib import Path

import torch
import xarray as xr

sys.path.insert(0, str(Path(__file__).parent))
from cycle_baselines import run_or_reuse, summarise

ANOMALY = {"vae": "anomaly", "prior": "anomaly"}  # the shipped anomaly autoencoder and its prior
TRIALS = [
    ("dps", {"scale": 0.0}),  # the prior alone ("ObsFree")
    ("dps", {"scale": 0.5}),
    ("dps", {"scale": 1.0}),  # the default
    ("dps", {"scale": 2.0}),
    ("lo-sda", {}),  # the defaults (residual_analysis on since 2026-12-04: then trial 24 runs the same)
    ("lo-sda", {"proximal": 0.1}),
    ("lo-sda", {"optimise_below": 0.9}),
    ("lo-sda", {"stochastic": False}),
    ("lo-sda", {"fit_target": 0.7}),
    ("lo-sda", {"fit_target": 1.5}),
    ("lo-sda", {"optimizer": "adam"}),
    ("lo-sda", {"steps": 16}),
    # Weight of the background's autoencoder residual added back (the default, 0.5, chosen from
    # 30-day cycles; 0 is the decoded latent alone, as before 2026-12-02).
    ("dps", {"background_residual": 0.0}),
    ("lo-sda", {"background_residual": 0.0}),
    ("dps", {"background_residual": 1.0}),
    ("lo-sda", {"background_residual": 1.0}),
    ("lo-sda", {"background_residual": 1.0, "stochastic": False}),
    ("lo-sda", {"background_residual": 1.0, "fit_target": 0.7}),
    # The analysis as the mean of K posterior draws (an estimate of the posterior mean).
    ("lo-sda", {"samples": 2}),
    ("lo-sda", {"samples": 4}),
    ("dps", {"samples": 4}),
    # Latent 3D-Var (L3DVar): B_z's scale on the training-set 24-h errors, as b_scale in 3dvar.
    ("latent-3dvar", {"b_scale": 1.0}),
    ("latent-3dvar", {"b_scale": 1.5}),
    ("latent-3dvar", {"b_scale": 3.0}),  # the default
    # The B_r 3D-Var of what the autoencoder cannot represent, after the latent analysis.
    ("lo-sda", {"residual_analysis": True}),
    ("lo-sda", {"residual_analysis": True, "background_residual": 1.0}),
    ("lo-sda", {"residual_analysis": True, "residual_b_scale": 1.5}),
    ("latent-3dvar", {"residual_analysis": True}),
    ("dps", {"residual_analysis": True}),
    ("lo-sda", {"residual_analysis": False}),  # trial 4's rows before 2026-12-04
    # 2026-12-05: the deterministic sampler, the wider B_r and a tighter latent fit (trial 32: the
    # new defaults), with the shipped and the anomaly autoencoder (30-day cycles:
    # results-cycle_score_da.txt).
    ("lo-sda", {"stochastic": True, "residual_b_scale": 1.0, "fit_target": 1.0}),  # trial 4 before 2026-12-05
    ("lo-sda", {"stochastic": False, "residual_b_scale": 1.5}),
    ("lo-sda", {"stochastic": False, "residual_b_scale": 1.5, "fit_target": 0.7}),
    ("lo-sda", {**ANOMALY, "stochastic": True, "residual_b_scale": 1.0, "fit_target": 1.0}),
    ("lo-sda", {**ANOMALY, "stochastic": False, "residual_b_scale": 1.5, "fit_target": 0.7}),
    ("lo-sda", {**ANOMALY, "stochastic": False, "residual_b_scale": 1.5, "fit_target": 0.5}),
    # The state-space prior (no autoencoder) and PhyDA: the guidance step ζ, chosen on the
    # validation months (--start 2017-11-15) at 1 % and 5 %.
    ("dps", {"prior": "state-default", "scale": 0.25}),
    ("dps", {"prior": "state-default", "scale": 0.5}),
    ("dps", {"prior": "state-default", "scale": 1.0}),
    ("phyda", {"scale": 0.0}),  # the VRE-conditioned prior alone
    ("phyda", {"scale": 0.25}),
    ("phyda", {"scale": 0.5}),
    ("phyda", {"scale": 1.0}),
    ("lo-sda", {"prior": "state-default"}),
]
SHOW = ("z500", "t850", "u250", "v500", "msl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=3)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--start", default="2018-01-01")
    parser.add_argument("--runs-dir", type=Path, default=Path("benchmarks/tune-runs"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", default=None, help="run only these trial numbers (0-based)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"tune_score_da — {date.today()} — {platform.machine()}, {torch.get_num_threads()} torch threads; "
        f"{args.days:g}-day cycles from {args.start}, {args.fraction:.0%} columns, 1 member; RMSE over all windows"
    )
    print(
        f"{'trial':40} "
        + " ".join(f"{'a-RMSE ' + c:>12}" for c in SHOW)
        + "   O-A/σo (same order)    χ²/m  s/window"
    )
    for number, (method, params) in enumerate(TRIALS):
        if args.only is not None and str(number) not in args.only:
            continue
        start = "" if args.start == "2018-01-01" else f"{args.start}-"
        name = f"{method}-{start}{args.fraction:g}-{args.days:g}d-" + "-".join(
            f"{k}{v}" for k, v in params.items()
        )
        cfg = {
            "run": {"start": args.start, "days": args.days, "name": name, "runs_dir": str(args.runs_dir)},
            "method": {"name": method, "params": params},
            "forecast": {"from_hours": []},
            "observations": {"networks": [{"kind": "columns", "fraction": args.fraction}]},
        }
        run_dir = run_or_reuse(cfg, progress=False)
        r = summarise(run_dir)
        idx = [r["labels"].index(c) for c in SHOW]
        with xr.open_dataset(run_dir / "scores.nc") as scores:
            chi2 = statistics.median(scores["method_chi2_per_obs"].values.tolist())
        label = f"{method} {params}" if params else method
        print(
            f"{label:40} "
            + " ".join(f"{r['analysis_rmse'][i]:12.4g}" for i in idx)
            + "   "
            + " ".join(f"{r['oma'][i]:.2f}" for i in idx)
            + f"   {chi2:6.2f}  {r['seconds']:8.2f}"
        )


if __name__ == "__main__":
    main()
