"""Skill, stability and speed of the 6-hour emulator on the held-out nature run (2018).

    python benchmarks/forecast_skill.py [--checkpoint PATH] [--threads 2] [--inits 56]

1. Latitude-weighted RMSE and ACC per channel at 6, 24, 72 and 120 h for the model,
   persistence and climatology, over forecasts started every 24 h from 2018-01-01
   (RMSE = sqrt of the mean over starts of the area-weighted MSE; ACC against the
   2016–2017 time-mean climatology: the Held–Suarez climate has no seasons).
2. A 60-day free rollout from 2018-01-01: NaN check, and per channel the bias of the
   time-mean (in units of the truth's temporal std) and the ratio of temporal variances.
   Stable means |bias| ≤ 0.2 std and variance ratio in [0.8, 1.2]. One 60-day sample of a
   chaotic flow is noisy, so the same check runs from `--rollout-starts` starts 30 days
   apart (batched as members) and their range is printed too. Beyond the target, a
   `--drift-days` free run shows when the climate drifts: per 30-day block, the ratio of the
   RMS anomaly from the training climatology, model over truth.
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


def climate_check(free: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> tuple[list, list]:
    """Per channel: time-mean bias in units of the truth's temporal std, and the variance ratio."""
    w = w[:, None]
    t_std = target.std(dim=0)
    bias = ((free.mean(0) - target.mean(0)) * w).mean(dim=(-2, -1)) / (t_std * w).mean(dim=(-2, -1))
    ratio = (free.var(0) * w).mean(dim=(-2, -1)) / (target.var(0) * w).mean(dim=(-2, -1))
    return bias.tolist(), ratio.tolist()


def print_drift(
    emulator, truth, before, clim, w, labels, days: int, show=("z500", "t850", "u250", "v500", "msl")
) -> None:
    """Per 30-day block of one long free run: RMS anomaly from climatology, model / truth."""
    with torch.inference_mode():
        free = emulator.rollout(truth[:1], days * 4, before[:1])[:, 0]
    target = truth[1 : days * 4 + 1]
    channels = [labels.index(label) for label in show if label in labels]
    print(
        f"\n{days}-day free run from 2018-01-01: RMS anomaly from climatology, model / truth, by 30-day block"
    )
    print(f"{'days':>9} " + " ".join(f"{labels[c]:>7}" for c in channels))
    for first in range(0, days, 30):
        block = slice(first * 4, (first + 30) * 4)
        ratio = (
            weighted_mse(free[block], clim, w).mean(0) / weighted_mse(target[block], clim, w).mean(0)
        ).sqrt()
        print(f"{first:4d}-{first + 30:<4d} " + " ".join(f"{float(ratio[c]):7.2f}" for c in channels))


def training_stages(training: dict) -> list[tuple[str, float]]:
    """(checkpoint, training seconds) from the first stage to this one, following `init_from`."""
    stages = [("this checkpoint", training["wall_seconds"])]
    parent = training.get("init_from")
    while parent:
        stages.append((parent["path"], parent.get("wall_seconds") or 0.0))
        parent = parent.get("init_from")
    return stages[::-1]


def is_stable(bias: float, ratio: float) -> bool:
    return abs(bias) <= 0.2 and 0.8 <= ratio <= 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inits", type=int, default=56, help="daily starts from 2018-01-01")
    parser.add_argument("--rollout-days", type=int, default=60)
    parser.add_argument("--rollout-starts", type=int, default=4, help="free rollouts, 30 days apart")
    parser.add_argument(
        "--drift-days", type=int, default=300, help="long free run for the drift table (0: none)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emulator, manifest = load_checkpoint(args.checkpoint)
    labels = manifest["channels"]
    stats = NormStats.from_dict(manifest["normalisation"])
    data = manifest["training"]["data"]
    spec = nature.NatureSpec(
        resolution=data["resolution"], seed=data["seed"], compiled=data["integrator"] == "compiled"
    )
    print(
        f"forecast_skill benchmark — {date.today()} — {platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, torch {torch.__version__}\ncheckpoint {args.checkpoint} "
        f"({manifest['parameters']:,} parameters, {manifest['architecture']})"
    )

    end = pd.Timestamp("2018-01-01") + pd.Timedelta(
        days=max(args.inits + 5, 30 * (args.rollout_starts - 1) + args.rollout_days, args.drift_days)
    )
    # From 6 h before the first start: a two-frame emulator's previous state.
    ds = nature.open_nature("2017-12-31T18", end, spec)
    grid = Grid.from_dataset(ds)
    check_compatible(manifest, labels, grid.latitudes, grid.longitudes, stats.mean, stats.std)
    series = stats.normalise(to_tensor(ds, labels))  # (time, C, lat, lon), 6-hourly
    truth, before = series[1:], series[:-1]  # truth[i] from 2018-01-01 and the state 6 h earlier
    train = manifest["training"]["config"]["data"]["train"]
    clim_ds = nature.open_nature(train[0], train[1], spec)
    clim = stats.normalise(torch.as_tensor(climatology(clim_ds, labels, *train).values, dtype=torch.float32))
    w = torch.as_tensor(grid.area_weights(), dtype=torch.float32)
    std = torch.as_tensor(stats.std, dtype=torch.float32)

    starts = torch.arange(args.inits) * 4
    state, previous = truth[starts], before[starts]
    scores = {}
    with torch.inference_mode():
        for step in range(1, max(LEADS_H) // 6 + 1):
            previous, state = state, emulator.step(state, previous)
            lead = step * 6
            if lead in LEADS_H:
                target = truth[starts + step]
                for name, fc in (
                    ("model", state),
                    ("persistence", truth[starts]),
                    ("climatology", clim.expand_as(target)),
                ):
                    rmse = weighted_mse(fc, target, w).mean(dim=0).sqrt() * std
                    scores[(name, lead)] = (rmse, acc(fc, target, clim, w))

    print(f"\nRMSE (physical units) and ACC on {args.inits} daily starts from 2018-01-01")
    print(
        f"{'channel':8} {'lead':>5} {'model':>10} {'persist.':>10} {'clim.':>10} {'model/pers':>10} "
        f"{'ACC model':>9} {'ACC pers':>8}"
    )
    for c, label in enumerate(labels):
        for lead in LEADS_H:
            m, p, k = (scores[(n, lead)] for n in ("model", "persistence", "climatology"))
            print(
                f"{label:8} {lead:4d}h {m[0][c]:10.4g} {p[0][c]:10.4g} {k[0][c]:10.4g} "
                f"{m[0][c] / p[0][c]:10.3f} {m[1][c]:9.3f} {p[1][c]:8.3f}"
            )
    print("\nTargets: 6-h RMSE <= 0.30 x persistence for every channel; beats persistence at every lead;")
    print("beats climatology to >= 72 h for z500 and t850.")
    ratios = [
        float(scores[("model", 6)][0][c] / scores[("persistence", 6)][0][c]) for c in range(len(labels))
    ]
    print(
        f"  6-h ratio model/persistence: max {max(ratios):.3f} ({labels[int(np.argmax(ratios))]}), "
        f"median {statistics.median(ratios):.3f}"
    )
    beats_pers = all(bool((scores[("model", h)][0] < scores[("persistence", h)][0]).all()) for h in LEADS_H)
    print(f"  beats persistence at every lead and channel: {beats_pers}")
    for label in ("z500", "t850"):
        if label in labels:
            c = labels.index(label)
            ok = [h for h in LEADS_H if scores[("model", h)][0][c] < scores[("climatology", h)][0][c]]
            print(f"  {label}: beats climatology at leads {ok} h")

    steps = args.rollout_days * 4
    rollout_starts = torch.arange(args.rollout_starts) * 30 * 4
    with torch.inference_mode():
        free = emulator.rollout(truth[rollout_starts], steps, before[rollout_starts])  # (step, start, C, ...)
    finite = bool(torch.isfinite(free).all())
    climate = [
        climate_check(free[:, k], truth[s + 1 : s + steps + 1], w) for k, s in enumerate(rollout_starts)
    ]
    print(f"\n{args.rollout_days}-day free rollout from 2018-01-01: finite = {finite}")
    print(f"{'channel':8} {'bias/std':>9} {'var ratio':>9} {'stable':>6}")
    for c, label in enumerate(labels):
        bias, ratio = climate[0][0][c], climate[0][1][c]
        print(f"{label:8} {bias:9.3f} {ratio:9.3f} {is_stable(bias, ratio)!s:>6}")
    if args.rollout_starts > 1:
        print(
            f"\nThe same from {args.rollout_starts} starts 30 days apart (2018-01-01 onward): range over starts"
        )
        print(f"{'channel':8} {'bias/std':>15} {'var ratio':>13} {'stable in':>9}")
        for c, label in enumerate(labels):
            biases = [b[c] for b, _ in climate]
            ratios = [r[c] for _, r in climate]
            stable = sum(is_stable(b, r) for b, r in zip(biases, ratios, strict=True))
            print(
                f"{label:8} {min(biases):7.3f}..{max(biases):6.3f} {min(ratios):6.3f}..{max(ratios):5.3f} "
                f"{stable:5d}/{len(climate)}"
            )

    if args.drift_days:
        print_drift(emulator, truth, before, clim, w, labels, args.drift_days)

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
                    model.step(x, x)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t)
            ms = 1000 * statistics.median(times[5:]) / members
            label = f"{device} compiled" if compiled else device
            print(f"  {label:12} {members:3d} member(s): {ms:7.2f} ms per member")
    stages = training_stages(manifest["training"])
    total = sum(seconds for _, seconds in stages) / 60
    detail = ", ".join(f"{path} {seconds / 60:.1f} min" for path, seconds in stages)
    print(
        f"\nTraining wall time: {total:.1f} min on {manifest['training']['device']} "
        f"({manifest['training']['threads']} threads), by stage: {detail}"
    )


if __name__ == "__main__":
    main()
