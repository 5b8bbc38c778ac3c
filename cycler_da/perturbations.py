"""Analysis-like perturbations of the truth: draws from an emulator's training-set B.

The prior learns cycled backgrounds from forecasts started at truth + such a draw, and the
emulator can be fine-tuned to forecast from such starts; both need the same draws.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from cycler_da.config import ForecastDataConfig
from cycler_da.normalization import NormStats
from cycler_da.state import Grid
from forecast_models.checkpoint import file_hash

Sampler = Callable[[int, torch.Generator], torch.Tensor]


def analysis_like_sampler(
    data: ForecastDataConfig, stats: NormStats, grid: Grid, emulator, checkpoint: Path, scale: float
) -> Sampler:
    """Draws ``(count, channel, lat, lon)`` normalised perturbations: a draw from the Gaussian B
    of `emulator`'s 24-h forecast errors over the training years, times an amplitude uniform in
    [0, `scale`] per draw (so starts range from the truth to `scale` × a 24-h forecast's error)."""
    from cycler_da import nature
    from cycler_da.core.covariance import ControlTransform
    from cycler_da.statistics_cache import TrainingErrors

    n = data.nature
    spec = nature.NatureSpec(n.resolution, n.seed, n.compiled)
    ds = nature.open_nature(data.train[0], data.train[1], spec, progress=False)
    device = next(emulator.parameters()).device
    bstats = TrainingErrors(
        lambda: ds,
        list(data.channels),
        tuple(data.train),
        stats,
        emulator.cpu(),
        file_hash(checkpoint),
        spec.key,
    ).statistics()
    emulator.to(device)
    transform = ControlTransform(bstats, grid.latitudes, grid.longitudes, 1.0)

    def draw(count: int, generator: torch.Generator) -> torch.Tensor:
        v = torch.randn((count, *transform.shape), generator=generator, dtype=torch.float64)
        amplitude = scale * torch.rand(count, generator=generator, dtype=torch.float64)
        return (transform(v) * amplitude[:, None, None, None]).float()

    return draw
