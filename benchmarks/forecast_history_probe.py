"""Does a second input frame lower the emulator's 6-h error? The same U-Net, the same budget, 1 or 2 frames.

    python benchmarks/forecast_history_probe.py --frames 1 [--minutes 25] [--threads 1]
    python benchmarks/forecast_history_probe.py --frames 2 [--minutes 25] [--threads 1]

The nature run is output on 3 of its 8 model levels, so the 11-channel state the emulator sees
does not determine the next one: part of the 6-h error is the hidden state. A second input
frame (the 6-h tendency x_t − x_{t−6h}, as GraphCast-like models take two states) lets the
network infer some of it. Both runs train the shipped architecture (width-48 U-Net, depth 2,
one block) from scratch on the canonical trajectory's training years, single steps with half
the samples mirrored north-south, for the same wall-clock budget with the same schedule
(linear warm-up over 5 %, cosine decay), and score the 6-h RMSE over persistence's on the
00 UTC starts of 2018-01-01..02-26 (the forecast_skill benchmark's 56 starts). A probe, not a
shipped model: it says whether the history input is worth building into the emulator.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from datetime import date

import torch
import yaml

from cycler_da.config import ForecastTrainingConfig
from cycler_da.forecast import load_series
from forecast_models.emulator import STATIC_FEATURES, latitude_features, pole_signs
from forecast_models.unet import SphereUNet

CONFIG = "configs/forecast_unet_t21_base.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, choices=(1, 2), required=True)
    parser.add_argument("--minutes", type=float, default=25.0, help="training wall-clock budget")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = yaml.safe_load(open(CONFIG))
    cfg = ForecastTrainingConfig(**raw | {"data": {**raw["data"], "extra_seeds": []}})
    train, _, stats, grid = load_series(cfg.data, False)
    train = stats.normalise(train)
    test_data = cfg.data.model_copy(
        update={"train": ["2018-01-01", "2018-02-26T18"], "valid": ["2018-03-01", "2018-03-02T18"]}
    )
    test = stats.normalise(load_series(test_data, False)[0])
    labels, frames = list(cfg.data.channels), args.frames
    channels = len(labels)
    increment_std = (train[1:] - train[:-1]).std(dim=(0, 2, 3))[:, None, None]
    sign = torch.cat([pole_signs(labels).repeat(frames), torch.ones(STATIC_FEATURES)])
    torch.manual_seed(0)
    net = SphereUNet(channels * frames + STATIC_FEATURES, channels, 48, 2, 1, sign)
    static = latitude_features(grid.latitudes)
    weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32)
    loss_weights = (0.5 * weights + 0.5)[:, None]
    mirror = torch.tensor([-1.0 if label.startswith("v") else 1.0 for label in labels])[:, None, None]

    def predict(now, previous):
        inputs = [now] + ([now - previous] if frames == 2 else [])
        features = static.expand(now.shape[0], -1, -1, now.shape[-1])
        return now + increment_std * net(torch.cat([*inputs, features], 1))

    optimiser = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    began, steps, budget = time.time(), 0, args.minutes * 60
    while time.time() - began < budget:
        progress = (time.time() - began) / budget
        lr = (
            2e-3 * progress / 0.05
            if progress < 0.05
            else 2e-3 * (0.01 + 0.495 * (1 + math.cos(math.pi * progress)))
        )
        for group in optimiser.param_groups:
            group["lr"] = lr
        idx = torch.randint(1, train.shape[0] - 1, (16,), generator=generator)
        shift = 2 * int(torch.randint(32, (1,), generator=generator))
        previous, now, target = (torch.roll(train[idx + k], shift, -1) for k in (-1, 0, 1))
        if torch.rand(1, generator=generator) < 0.5:  # latitude reversed, v negated
            previous, now, target = (mirror * t.flip(-2) for t in (previous, now, target))
        loss = (((predict(now, previous) - target) / increment_std).pow(2) * loss_weights).mean()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimiser.step()
        steps += 1
    net.eval()
    model_mse, persistence_mse = torch.zeros(channels), torch.zeros(channels)
    with torch.no_grad():
        for chunk in torch.arange(1, test.shape[0] - 1, 4).split(32):  # 00 UTC starts
            truth = test[chunk + 1]
            model_mse += (
                ((predict(test[chunk], test[chunk - 1]) - truth).pow(2) * weights[:, None])
                .mean(dim=(2, 3))
                .sum(0)
            )
            persistence_mse += ((test[chunk] - truth).pow(2) * weights[:, None]).mean(dim=(2, 3)).sum(0)
    ratio = (model_mse / persistence_mse).sqrt()
    print(
        f"forecast_history_probe — {date.today()} — {platform.machine()}, {torch.get_num_threads()} torch threads"
    )
    print(
        f"frames {frames}: {steps} steps in {args.minutes:g} min; 6-h RMSE / persistence's, 2018-01-01..02-26 00 UTC"
    )
    print("  " + " ".join(f"{label} {r:.3f}" for label, r in zip(labels, ratio.tolist(), strict=True)))
    print(f"  max {ratio.max():.3f} median {ratio.median():.3f}")


if __name__ == "__main__":
    main()
