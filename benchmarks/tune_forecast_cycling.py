"""Does fine-tuning the emulator on analysis-like starts help cycling? Trials of `perturbed_fraction`.

    python benchmarks/tune_forecast_cycling.py --parent CHECKPOINT [--days 10] [--fraction 0.05]
        [--epochs 2] [--out-dir benchmarks/tune-forecast] [--only 0 2]

Each trial fine-tunes `--parent` for `--epochs` single-step epochs (lr 3e-4, seed-0 training
years) with a share `perturbed_fraction` of the starts perturbed by draws from the parent's B
times an amplitude uniform in [0, `perturbation_scale`], the target still the true next state;
then cycles the default 3D-Var from 2018-01-01 with it. Prints per trial the fine-tuned
model's validation 6-h RMSE from the truth (normalised, mean over channels; from its
manifest) and the cycle's analysis RMSE over its second half. Row 0 cycles the parent itself;
`--also` adds rows that cycle other checkpoints as they are (e.g. the shipped two-stage model).
Checkpoints and runs already complete in --out-dir are reused (a checkpoint only if its
manifest holds the same training config).
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
from cycle_baselines import run_or_reuse

from cycler_da.config import ForecastTrainingConfig, parse_config
from cycler_da.forecast import train_forecast
from forecast_models.checkpoint import file_hash, read_manifest

# (perturbed_fraction, perturbation_scale); None: the parent, not fine-tuned.
TRIALS = [None, (0.0, 1.0), (0.5, 1.0), (0.25, 2.0), (0.5, 2.0)]
SHOW = ("z500", "t850", "u250", "v500", "msl")


def fine_tuned(parent: Path, trial: tuple[float, float], epochs: int, out_dir: Path) -> Path:
    fraction, scale = trial
    out = out_dir / f"ft-{file_hash(parent)[:8]}-e{epochs}-f{fraction:g}-s{scale:g}.pt"
    architecture = read_manifest(parent)["architecture"]
    config = parse_config(
        {
            "model": architecture,
            "init_from": str(parent),
            "training": {
                "epochs": epochs,
                "lr": 3e-4,
                "rollout_epochs": 0,
                "perturbed_fraction": fraction,
                "perturbation_scale": scale,
            },
        },
        ForecastTrainingConfig,
    )
    if out.exists():
        if read_manifest(out)["training"]["config"] != config.model_dump(mode="json"):
            raise SystemExit(f"{out} was trained with another config; move it away")
        return out
    command = f"benchmarks/tune_forecast_cycling.py trial {trial}"
    train_forecast(config, out, progress=False, command=command)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=Path, required=True)
    parser.add_argument("--days", type=float, default=10)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/tune-forecast"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", default=None, help="run only these trial numbers (0-based)")
    parser.add_argument("--also", nargs="+", type=Path, default=[], help="checkpoints to cycle as they are")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    half = int(args.days * 4) // 2
    print(
        f"tune_forecast_cycling — {date.today()} — {platform.machine()}, {torch.get_num_threads()} torch "
        f"threads; parent {args.parent} (sha256 {file_hash(args.parent)[:12]}); fine-tune {args.epochs} "
        f"epochs; {args.days:g}-day 3dvar cycles from 2018-01-01, {args.fraction:.0%} columns; "
        f"analysis RMSE over windows {half + 1}+"
    )
    print(f"{'trial':34} {'valid 6-h':>10} " + " ".join(f"{'a-RMSE ' + c:>12}" for c in SHOW))
    rows = [t for n, t in enumerate(TRIALS) if args.only is None or str(n) in args.only] + list(args.also)
    for trial in rows:
        if isinstance(trial, Path):
            checkpoint, name, label = trial, f"{file_hash(trial)[:8]}-as-is", str(trial)
        elif trial is None:
            checkpoint, name, label = args.parent, f"{file_hash(args.parent)[:8]}-parent", "parent"
        else:
            checkpoint = fine_tuned(args.parent, trial, args.epochs, args.out_dir)
            name, label = checkpoint.stem, f"fraction {trial[0]:g}, scale {trial[1]:g}"
        valid = np.mean(read_manifest(checkpoint)["training"]["history"][-1]["valid_rmse_6h"])
        run_dir = run_or_reuse(
            {
                "run": {
                    "start": "2018-01-01",
                    "days": args.days,
                    "name": f"3dvar-{name}",
                    "runs_dir": str(args.out_dir / "runs"),
                },
                "forecast": {"checkpoint": str(checkpoint)},
                "method": {"name": "3dvar"},
                "observations": {"networks": [{"kind": "columns", "fraction": args.fraction}]},
            },
            progress=False,
        )
        with xr.open_dataset(run_dir / "scores.nc") as scores:
            labels = [str(c) for c in scores["channel"].values]
            rmse = np.sqrt((scores["analysis_rmse"].isel(time=slice(half, None)) ** 2).mean("time")).values
        print(f"{label:34} {valid:10.4f} " + " ".join(f"{rmse[labels.index(c)]:12.4g}" for c in SHOW))


if __name__ == "__main__":
    main()
