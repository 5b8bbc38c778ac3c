"""Nature-run cost and chaos: CPU cost per simulated year, and a twin experiment.

    python benchmarks/nature_run.py [--threads 2] [--cost-days 10] [--twin-days 60]

Prints (1) the wall time per step and per simulated year at T21 and T42, compiled and eager;
(2) a twin experiment from the 2018-01-01 state of the canonical T21 trajectory: the control
and a copy with 0.01 K white noise in temperature, both integrated --twin-days (compiled).
It reports the area-weighted RMS difference of z500 and t850 against the saturation level
(√2 × the control's temporal standard deviation), the error-doubling time fitted in the
exponential phase, and the day the error passes 50 % and 90 % of saturation.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import numpy as np
import pandas as pd
import torch

from cycler_da import nature
from cycler_da.core.channels import NATURE_LEVELS
from cycler_da.regrid import gaussian_grid


def time_steps(resolution: str, compiled: bool, days: int) -> tuple[float, float]:
    """(ms per step, compile seconds) as the median over 6-hour blocks."""
    model = nature._model(resolution)
    state = nature.shipped_snapshots("T21")[nature.ORIGIN]
    if resolution != "T21":
        from dinosaur_torch import coordinate_systems

        state = coordinate_systems.get_spectral_upsample_fn(nature._model("T21").coords, model.coords)(state)
    began = time.perf_counter()
    advance = nature._stepper(resolution, compiled)
    state = advance(state)  # includes compilation
    compile_s = time.perf_counter() - began
    blocks = []
    for _ in range(days * 4):
        t = time.perf_counter()
        state = advance(state)
        blocks.append(time.perf_counter() - t)
    return 1000 * statistics.median(blocks) / model.config.steps_per_6h, compile_s


def field(model, state, name: str, level: int) -> np.ndarray:
    values = model.diagnose(state, NATURE_LEVELS)[name][NATURE_LEVELS.index(level)]
    return values.numpy().T  # (latitude, longitude)


def twin(days: int) -> None:
    model = nature._model("T21")
    advance = nature._stepper("T21", True)
    weights = gaussian_grid(32).area_weights()[:, None]
    control = nature.shipped_snapshots("T21")[pd.Timestamp("2018-01-01")]
    perturbed = model.perturb(control, 0.01, torch.Generator().manual_seed(1))
    series = {"z500": ("geopotential", 500), "t850": ("temperature", 850)}
    diffs = {k: [] for k in series}
    history = {k: [] for k in series}
    for _ in range(days * 4):
        control, perturbed = advance(control), advance(perturbed)
        for key, (name, level) in series.items():
            a, b = field(model, control, name, level), field(model, perturbed, name, level)
            diffs[key].append(float(np.sqrt(np.mean(weights * (a - b) ** 2))))
            history[key].append(a)
    t_days = np.arange(1, days * 4 + 1) / 4
    print(f"\nTwin experiment, T21, 0.01 K noise in T at 2018-01-01, {days} days (compiled)")
    header = [
        "channel",
        "doubling (d)",
        "fit window (d)",
        "sat. level",
        "err/sat d10",
        "d20",
        "d30",
        "d40",
        "50% sat (d)",
        "90% sat (d)",
    ]
    widths = [8, 12, 15, 11, 11, 6, 6, 6, 11, 11]
    print(
        " ".join(
            f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for key in series:
        err = np.asarray(diffs[key])
        stack = np.stack(history[key])
        saturation = float(np.sqrt(2 * np.mean(weights * stack.var(axis=0))))
        ratio = err / saturation
        # Exponential phase: after the initial adjustment (day 2), below 20 % of saturation.
        mask = (t_days >= 2) & (ratio < 0.2)
        slope = np.polyfit(t_days[mask], np.log(err[mask]), 1)[0]
        doubling = np.log(2) / slope
        window = f"{t_days[mask][0]:.1f}-{t_days[mask][-1]:.1f}"

        def first_day(level: float, ratio: np.ndarray = ratio) -> str:
            hit = np.nonzero(ratio >= level)[0]
            return f"{t_days[hit[0]]:.1f}" if hit.size else f">{days}"

        at = {d: ratio[min(len(ratio) - 1, d * 4 - 1)] for d in (10, 20, 30, 40)}
        print(
            f"{key:8} {doubling:12.2f} {window:>15} {saturation:11.1f} {at[10]:11.3f} {at[20]:6.3f} "
            f"{at[30]:6.3f} {at[40]:6.3f} {first_day(0.5):>11} {first_day(0.9):>11}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cost-days", type=int, default=10)
    parser.add_argument("--twin-days", type=int, default=60)
    parser.add_argument("--skip-t42", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"nature_run benchmark — {date.today()} — {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(f"\nCost over {args.cost_days} simulated days (median per 6-hour block)")
    print(
        f"{'resolution':10} {'integrator':10} {'dt (min)':>8} {'ms/step':>8} {'min/sim. year':>14} "
        f"{'compile (s)':>11}"
    )
    for resolution in ("T21",) if args.skip_t42 else ("T21", "T42"):
        for compiled in (True, False):
            ms, compile_s = time_steps(resolution, compiled, args.cost_days)
            steps_per_year = 365 * 24 * 60 / nature.DT_MINUTES[resolution]
            print(
                f"{resolution:10} {'compiled' if compiled else 'eager':10} "
                f"{nature.DT_MINUTES[resolution]:8.0f} {ms:8.2f} {ms * steps_per_year / 60000:14.2f} "
                f"{compile_s if compiled else 0:11.1f}"
            )
    twin(args.twin_days)


if __name__ == "__main__":
    main()
