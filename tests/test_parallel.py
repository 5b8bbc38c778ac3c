"""Data-parallel training: a step of two CPU ranks (gloo) uses the gradient one process computes on
the same global batch, to round-off (compared through Adam's first moment after one step: Adam's
normalised update turns the round-off of a near-zero gradient into a visible weight difference)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cycler_da.core.parallel import Ranks
from forecast_models.emulator import Emulator
from forecast_models.training import Mirror, TrainConfig, train
from forecast_models.unet import SphereUNet
from score_da.networks import Denoiser
from score_da.training import Pairs, PriorObjective, PriorTraining, train_prior
from score_da.vre import PhyDAModel, VirtualReconstruction, column_observations

LAT = np.linspace(-80, 80, 8)
LABELS = ["z500", "t850", "msl"]


def _series(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 8, 16, generator=torch.Generator().manual_seed(seed))


def _prior(vre: bool, ranks: Ranks, batch: int, state: Path) -> None:
    """One optimiser step of a tiny prior (with the VRE's observations when `vre`), saved to `state`."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    pairs = Pairs(_series(20), torch.randint(20, (40,), generator=g), _series(40, 2), torch.full((40,), 6.0))
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Denoiser(3, LAT, width=8, depth=1, blocks=1, embedding=16, conditions=2 if vre else 1)
        if vre:
            model = PhyDAModel(model, VirtualReconstruction(LABELS, LAT, width=8, depth=1))
        models.append(model)
    denoiser, ema = models
    schedule = denoiser.denoiser.schedule if vre else denoiser.schedule
    observe = (lambda z, gen: column_observations(z, (0.1, 0.3), 0.1, gen)) if vre else None
    config = PriorTraining(steps=1, batch_size=batch, lr=1e-3, log_every=1)
    objective = PriorObjective(schedule, observe=observe)
    train_prior(denoiser, ema, objective, pairs, pairs, config, state, progress=False, ranks=ranks)


def _forecast(ranks: Ranks, batch: int, state: Path) -> None:
    """One optimiser step (one epoch of one batch) of a tiny two-frame emulator, mirrored and
    perturbed samples included, saved to `state`."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    emulator = Emulator(SphereUNet(8, 3, 8, 1, 1), LAT, np.ones(3), frames=2)
    mirror = Mirror.of(LABELS, np.zeros(3), np.ones(3))
    config = TrainConfig(
        epochs=1, batch_size=batch, rollout_epochs=0, mirror_probability=0.5, perturbed_fraction=0.5
    )
    perturb = lambda n, gen: 0.1 * torch.randn(n, 3, 8, 16, generator=gen)  # noqa: E731
    series = _series(batch + 2)  # batch pairs: one step
    train(emulator, series, _series(4, 3), torch.ones(8), config, state, False, mirror, perturb, ranks=ranks)


def _first_moments(state: Path, key: str) -> list[torch.Tensor]:
    """Adam's first moments after one step: (1 − β1) × the gradient the step used."""
    saved = torch.load(state, weights_only=False)
    return [s["exp_avg"] for s in saved[key]["state"].values()]


def _rank(rank: int, port: int, train_one, args: tuple, state: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        train_one(*args[:-1], Ranks(rank, 2), args[-1], state)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = [
    pytest.param(_prior, (False,), 8, "optimiser", id="prior"),
    pytest.param(_prior, (True,), 7, "optimiser", id="phyda-prior-uneven-shares"),
    pytest.param(_forecast, (), 6, "optimiser", id="forecast"),
]


@pytest.mark.parametrize(("train_one", "args", "batch", "key"), CASES)
def test_a_two_rank_step_uses_the_gradient_of_one_process_on_the_same_global_batch(
    tmp_path, train_one, args, batch, key
):
    train_one(*args, Ranks(), batch, tmp_path / "alone")
    mp.spawn(_rank, args=(_free_port(), train_one, (*args, batch), tmp_path / "ranks"), nprocs=2, join=True)
    alone, ranks = _first_moments(tmp_path / "alone", key), _first_moments(tmp_path / "ranks", key)
    assert len(alone) == len(ranks) > 0
    for a, b in zip(alone, ranks, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    train_one(*args, Ranks(), batch - 1, tmp_path / "other")  # another batch: other gradients
    assert any(
        not torch.allclose(a, b) for a, b in zip(alone, _first_moments(tmp_path / "other", key), strict=True)
    )


def test_shares_cover_the_batch_and_weights_make_the_mean():
    for batch in (7, 8, 1):
        shares = [Ranks(r, 3).share(batch) for r in range(3)]
        assert [i for s in shares for i in range(s.start, s.stop)] == list(range(batch))
        losses = torch.arange(batch, dtype=torch.float64)
        weighted = [Ranks(r, 3).weighted(losses[s].mean(), batch) for r, s in enumerate(shares)]
        assert float(sum(weighted) / 3) == pytest.approx(float(losses.mean()))
