"""Makes the shipped spun-up states of the canonical Held–Suarez trajectory.

    python scripts/make_nature_snapshots.py [--spinup-days 300] [--threads 2]

From an isothermal atmosphere at rest (seed 0) it spins up ``--spinup-days`` (discarded),
calls the result 2016-01-01 00 UTC, and integrates to 2019-01-01 with the same compiled
integrator that ``cycler data nature`` uses, saving the spectral state at the first of
every month to ``cycler_da/data/held_suarez_T21.npz``. Takes about 20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from tqdm import tqdm

from cycler_da import nature


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spinup-days", type=int, default=300)
    parser.add_argument("--end", default="2019-01-01")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = nature._model("T21")
    advance = nature._stepper("T21", compiled=True)
    state = model.rest_state(torch.Generator().manual_seed(0))
    began = time.perf_counter()
    for _ in tqdm(range(args.spinup_days * 4), desc="spin-up", mininterval=10):
        state = advance(state)
    snapshots = {}
    times = pd.date_range(nature.ORIGIN, args.end, freq=nature.STEP)
    for t in tqdm(times, desc="canonical trajectory", mininterval=10):
        if t.day == 1 and t.hour == 0:
            snapshots[t] = state
        if t != times[-1]:
            state = advance(state)
    path = nature.snapshot_path("T21")
    path.parent.mkdir(parents=True, exist_ok=True)
    nature.save_states(path, snapshots)
    print(f"wrote {len(snapshots)} snapshots to {path} in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
