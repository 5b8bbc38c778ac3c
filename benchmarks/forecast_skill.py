"""Skill, stability and speed of the 6-hour emulator on the held-out nature run (2018).

    python benchmarks/forecast_skill.py [--checkpoint PATH] [--threads 2] [--inits 56]

1. Latitude-weighted RMSE and ACC per channel at 6, 24, 72 and 120 h for the model,
   persistence and climatology, over forecasts started every 24 h from 2018-01-01
   (RMSE = sqrt of the mean over starts of the area-weighted MSE; ACC against the
   2016–2017 time-mean climatology: the Held–Suarez climate has no seasons).
2. A 60-day free rollout from 2018-01-01: NaN check, and per channel the bias of the
   time-mean (in units of the truth's temporal std) and the ratio of temporal variances.
   Stable means |bias| ≤ 0.2 std and variance ratio in [0.8, 1.2].
3. Inference time per step per member (median of 50 steps) for 1 and 20 members, on CPU
   and on CUDA when available; the training wall time from the checkpoint's manifest.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from datetime import date

import numpy as np
import pandas as pd
import torch

from cycler_da import nature
from cycler_da.normalization import NormStats, climatology
from cycler_da.state import Grid, to_tensor
from forecast_models.checkpoint import DEFAULT_CHECKPOINT, check_compatible, load_checkpoint

LEADS_H = (6, 24, 72, 120)


def weighted_mse(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(..., C, lat, lon) → (..., C)."""
    return ((a - b) ** 2 * w[:, None]).mean(dim=(-2, -1))


def acc(fc: torch.Tensor, truth: torch.Tensor, clim: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Anomaly correlation per channel, pooled over starts (WB2 style, area-weighted)."""
    fa, ta = fc - clim, truth - clim
    num = (fa * ta * w[:, None]).sum(dim=(-2, -1))
    den = torch.sqrt((fa**2 * w[:, None]).sum(dim=(-2, -1)) * (ta**2 * w[:, None]).sum(dim=(-2, -1)))
    return (num / den).mean(dim=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inits", type=int, default=56, help="daily starts from 2018-01-01")
    parser.add_argument("--rollout-days", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emulator, manifest = load_checkpoint(args.checkpoint)
    labels = manifest["channels"]
    stats = NormStats.from_dict(manifest["normalisation"])
    data = manifest["training"]["data"]
    spec = nature.NatureSpec(
        resolution=data["resolution"], seed=data["seed"], compiled=data["integrator"] == "compiled"
    )
    print(f"forecast_skill benchmark — {date.today()} — {platform.machine()}, {torch.get_num_threads()} "
          f"torch threads, torch {torch.__version__}\ncheckpoint {args.checkpoint} "
          f"({manifest['parameters']:,} parameters, {manifest['architecture']})")  # fmt: skip

    end = pd.Timestamp("2018-01-01") + pd.Timedelta(days=max(args.inits + 5, args.rollout_days))
    ds = nature.open_nature("2018-01-01", end, spec)
    grid = Grid.from_dataset(ds)
    check_compatible(manifest, labels, grid.latitudes, grid.longitudes, stats.mean, stats.std)
    truth = stats.normalise(to_tensor(ds, labels))  # (time, C, lat, lon), 6-hourly
    train = manifest["training"]["config"]["data"]["train"]
    clim_ds = nature.open_nature(train[0], train[1], spec)
    clim = stats.normalise(torch.as_tensor(climatology(clim_ds, labels, *train).values, dtype=torch.float32))
    w = torch.as_tensor(grid.area_weights(), dtype=torch.float32)
    std = torch.as_tensor(stats.std, dtype=torch.float32)

    starts = torch.arange(args.inits) * 4
    state = truth[starts]
    scores = {}
    with torch.inference_mode():
        for step in range(1, max(LEADS_H) // 6 + 1):
            state = emulator.step(state)
            lead = step * 6
            if lead in LEADS_H:
                target = truth[starts + step]
                for name, fc in (("model", state), ("persistence", truth[starts]),
                                 ("climatology", clim.expand_as(target))):  # fmt: skip
                    rmse = weighted_mse(fc, target, w).mean(dim=0).sqrt() * std
                    scores[(name, lead)] = (rmse, acc(fc, target, clim, w))

    print(f"\nRMSE (physical units) and ACC on {args.inits} daily starts from 2018-01-01")
    print(f"{'channel':8} {'lead':>5} {'model':>10} {'persist.':>10} {'clim.':>10} {'model/pers':>10} "
          f"{'ACC model':>9} {'ACC pers':>8}")  # fmt: skip
    for c, label in enumerate(labels):
        for lead in LEADS_H:
            m, p, k = (scores[(n, lead)] for n in ("model", "persistence", "climatology"))
            print(f"{label:8} {lead:4d}h {m[0][c]:10.4g} {p[0][c]:10.4g} {k[0][c]:10.4g} "
                  f"{m[0][c] / p[0][c]:10.3f} {m[1][c]:9.3f} {p[1][c]:8.3f}")  # fmt: skip
    print("\nTargets: 6-h RMSE <= 0.30 x persistence for every channel; beats persistence at every lead;")
    print("beats climatology to >= 72 h for z500 and t850.")
    ratios = [
        float(scores[("model", 6)][0][c] / scores[("persistence", 6)][0][c]) for c in range(len(labels))
    ]
    print(f"  6-h ratio model/persistence: max {max(ratios):.3f} ({labels[int(np.argmax(ratios))]}), "
          f"median {statistics.median(ratios):.3f}")  # fmt: skip
    beats_pers = all(bool((scores[("model", h)][0] < scores[("persistence", h)][0]).all()) for h in LEADS_H)
    print(f"  beats persistence at every lead and channel: {beats_pers}")
    for label in ("z500", "t850"):
        if label in labels:
            c = labels.index(label)
            ok = [h for h in LEADS_H if scores[("model", h)][0][c] < scores[("climatology", h)][0][c]]
            print(f"  {label}: beats climatology at leads {ok} h")

    steps = args.rollout_days * 4
    with torch.inference_mode():
        free = emulator.rollout(truth[:1], steps)[:, 0]
    target = truth[1 : steps + 1]
    finite = bool(torch.isfinite(free).all())
    print(f"\n{args.rollout_days}-day free rollout from 2018-01-01: finite = {finite}")
    print(f"{'channel':8} {'bias/std':>9} {'var ratio':>9} {'stable':>6}")
    for c, label in enumerate(labels):
        t_std = target[:, c].std(dim=0)
        bias = float(
            ((free[:, c].mean(0) - target[:, c].mean(0)) * w[:, None]).mean() / (t_std * w[:, None]).mean()
        )
        ratio = float((free[:, c].var(0) * w[:, None]).mean() / (target[:, c].var(0) * w[:, None]).mean())
        print(f"{label:8} {bias:9.3f} {ratio:9.3f} {abs(bias) <= 0.2 and 0.8 <= ratio <= 1.2!s:>6}")

    print("\nInference per 6-h step per member (median of 50 steps)")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    variants = [(d, False) for d in devices] + [("cpu", True)]
    for device, compiled in variants:
        model = emulator.to(device)
        if compiled:
            model = copy.deepcopy(emulator).compile_network()
        for members in (1, 20):
            x = truth[:1].expand(members, -1, -1, -1).contiguous().to(device)
            times = []
            with torch.inference_mode():
                for _ in range(55):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    model.step(x)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t)
            ms = 1000 * statistics.median(times[5:]) / members
            label = f"{device} compiled" if compiled else device
            print(f"  {label:12} {members:3d} member(s): {ms:7.2f} ms per member")
    training = manifest["training"]
    parent = training.get("init_from")
    total = training["wall_seconds"] + ((parent or {}).get("wall_seconds") or 0)
    stages = (
        f", of which {training['wall_seconds'] / 60:.1f} min fine-tuning {parent['path']}" if parent else ""
    )
    print(f"\nTraining wall time: {total / 60:.1f} min on {training['device']} ({training['threads']} threads)"
          f"{stages}")  # fmt: skip


if __name__ == "__main__":
    main()
