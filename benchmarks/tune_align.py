"""Tuning Align-DA's β and learning rate on the validation period (the issue: "β ... tune on validation").

    python benchmarks/tune_align.py --pairs pairs-T21.nc [--trials aligned 2000:1e-5 32000:1e-5 8000:1e-4]
        [--start 2017-11-15] [--days 3] [--fraction 0.01] [--guidances none dps] [--cycle-days 7]
        [--cycle-fraction 0.05] [--out-dir benchmarks/tune-align] [--threads 2]

Each trial (``aligned``: the shipped -M prior, β 8000 and lr 1e-5) aligns the shipped reference prior on the multi-reward pairs of --pairs with one
(β, lr) and the shipped alignment's other settings (``configs/align_t21.yaml``), then runs
``align-da`` with it under each guidance in the seed protocol (48-h backgrounds from the truth)
from --start, inside the validation months the held-out pairs come from (2017-11..12), never
the 2018 test period; and, since the 30-day benchmark found the shipped alignment hurting in
cycles, a --cycle-days cycle at --cycle-fraction with the default (dps) guidance from the same
start. Printed per trial: the held-out implicit accuracy and ε-MSE drift at the end of the
alignment, and per run the z500 analysis RMSE and the median over channels of the RMSE ratio
to the reference prior (below 1: the alignment helps). Checkpoints and runs in --out-dir are
reused.
"""

from __future__ import annotations

import argparse
import platform
from datetime import date
from pathlib import Path

import numpy as np
import torch
from cycle_baselines import run_or_reuse, summarise

from cycler_da.config import load_config
from cycler_da.train_align import AlignmentConfig, train_alignment
from score_da import checkpoint

CONFIG = Path(__file__).parents[1] / "configs" / "align_t21.yaml"


def aligned(pairs: Path, beta: float, lr: float, out_dir: Path) -> Path:
    """The prior aligned with (β, lr), made unless --out-dir has it."""
    out = out_dir / f"prior-beta{beta:g}-lr{lr:g}.pt"
    if not out.exists():
        config = load_config(
            CONFIG, AlignmentConfig, {"pairs": str(pairs), "training.beta": beta, "training.lr": lr}
        )
        train_alignment(
            config, out, progress=True, command=f"benchmarks/tune_align.py beta={beta:g} lr={lr:g}"
        )
    return out


def run(prior: str, tag: str, guidance: str, args, cycle: bool = False) -> dict:
    """Seed protocol (--days, --fraction), or with `cycle` a cycle (--cycle-days, --cycle-fraction)."""
    params = {"prior": prior, "guidance": guidance} | ({} if cycle else {"lead_hours": 48.0})
    cfg = {
        "run": {
            "start": args.start,
            "days": args.cycle_days if cycle else args.days,
            "name": f"{tag}-{guidance}" + ("-cycle" if cycle else ""),
            "runs_dir": str(args.out_dir / "runs"),
            "protocol": "cycle" if cycle else "seed",
        },
        "method": {"name": "align-da", "params": params},
        "observations": {
            "networks": [{"kind": "columns", "fraction": args.cycle_fraction if cycle else args.fraction}]
        },
        "forecast": {"from_hours": []},
    }
    return summarise(run_or_reuse(cfg))


def scores(prior: str, tag: str, args) -> dict:
    """Label → result: each guidance in the seed protocol, and the default guidance in a cycle."""
    out = {f"seed {g}": run(prior, tag, g, args) for g in args.guidances}
    if args.cycle_days:
        out["cycle dps"] = run(prior, tag, "dps", args, cycle=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--trials", nargs="+", default=["aligned", "2000:1e-5", "32000:1e-5", "8000:1e-4"])
    parser.add_argument("--start", default="2017-11-15")
    parser.add_argument("--days", type=float, default=3)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--guidances", nargs="+", default=["none", "dps"])
    parser.add_argument("--cycle-days", type=float, default=7, help="0: no cycle")
    parser.add_argument("--cycle-fraction", type=float, default=0.05)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/tune-align"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"tune_align — {date.today()} — {platform.machine()} ({platform.processor() or 'cpu'}), "
        f"{torch.get_num_threads()} torch threads; seed protocol from {args.start}, {args.days:g} days, "
        f"{args.fraction:.0%} columns"
    )
    reference = scores("default", "reference", args)
    z = next(iter(reference.values()))["labels"].index("z500")
    print(
        f"\n{'trial':18} {'valid acc':>9} {'drift':>8}"
        + "".join(f" {k + ' z500':>16} {'ratio':>6}" for k in reference)
    )
    print(
        f"{'reference':18} {'':>9} {'':>8}"
        + "".join(f" {r['analysis_rmse'][z]:16.4g} {1.0:6.3f}" for r in reference.values())
    )
    for trial in args.trials:
        if trial == "aligned":
            path = checkpoint.resolve("aligned", "prior")
        else:
            beta, lr = (float(v) for v in trial.split(":"))
            path = aligned(args.pairs, beta, lr, args.out_dir)
        manifest, _ = checkpoint.read(path, "prior")
        a = manifest["alignment"]
        last = a["history"][-1]
        name = f"β {a['config']['training']['beta']:g}, lr {a['config']['training']['lr']:g}"
        line = f"{name:18} {last['valid_accuracy']:9.3f} {last['valid_drift']:8.1e}"
        for key, r in scores(str(path), path.stem, args).items():
            ratio = np.median(r["analysis_rmse"] / reference[key]["analysis_rmse"])
            line += f" {r['analysis_rmse'][z]:16.4g} {ratio:6.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
