"""Forecast-model inference time per 6-h step per member, eager and torch.compile'd, on CPU.

    python benchmarks/inference_speed.py [--threads 2]

Uses the shipped weights; median of 50 steps after 5 warm-up steps, for 1, 20 and 40 members.
The compiled variant's first step includes compilation (printed separately).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from datetime import date

import torch

from forecast_models.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emulator, manifest = load_checkpoint(DEFAULT_CHECKPOINT, "cpu")
    shape = (
        len(manifest["channels"]),
        len(manifest["grid"]["latitudes"]),
        len(manifest["grid"]["longitudes"]),
    )
    print(
        f"inference_speed — {date.today()} — {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )
    for compiled in (False, True):
        model = copy.deepcopy(emulator).compile_network() if compiled else emulator
        for members in (1, 20, 40):
            x = torch.randn(members, *shape)
            times = []
            with torch.inference_mode():
                began = time.perf_counter()
                model.step(x, x)
                first = time.perf_counter() - began
                for _ in range(55):
                    began = time.perf_counter()
                    model.step(x, x)
                    times.append(time.perf_counter() - began)
            ms = 1000 * statistics.median(times[5:]) / members
            label = "compiled" if compiled else "eager"
            print(f"  {label:8} {members:3d} member(s): {ms:6.2f} ms per member (first step {first:.1f} s)")


if __name__ == "__main__":
    main()
