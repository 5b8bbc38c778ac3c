"""Align-DA: balance diagnostics, rewards, pair selection, the DPO loss, the pipeline and the method."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import xarray as xr

from cycler_da.core.balance import Balance, balance_score
from cycler_da.core.contract import Observations
from cycler_da.core.gridded import observations_on_grid
from observation_ops.operator import PointObservationOperator
from score_da import rewards
from score_da.alignment import AlignmentTraining, PreferencePairs, align_prior, dpo_loss
from score_da.networks import Denoiser

LABELS = ("z500", "z850", "t500", "t850", "u500", "v500", "u850", "v850")


def test_a_balanced_sample_scores_one_against_a_balanced_truth_and_a_shuffled_one_lower(balanced_state):
    truth, lat = balanced_state
    balance = Balance(LABELS, lat)
    shuffled = truth.clone()
    for c in ("u500", "v500", "u850", "v850"):
        shuffled[:, LABELS.index(c)] = shuffled[:, LABELS.index(c)].roll(11, -1)
    scores = rewards.balance_rewards(balance, torch.cat([truth, shuffled]), truth)
    assert float(scores["geostrophic"][0]) == pytest.approx(1.0, abs=1e-9)
    assert float(scores["geostrophic"][1]) < 0.5
    assert float(balance_score(torch.tensor(0.3), torch.tensor(0.3))) == 1.0


def test_a_perfect_sample_wins_every_bradley_terry_comparison():
    errors = torch.rand(8, 5, generator=torch.Generator().manual_seed(0)) + 0.1
    errors[3] = 0.0
    reward = rewards.bradley_terry(errors)
    assert int(reward.argmax()) == 3
    wins = torch.sigmoid(errors[None] - errors[:, None])[3]  # sample 3 against every other, per channel
    assert bool((wins[torch.arange(8) != 3] > 0.5).all())
    assert float(rewards.bradley_terry(torch.ones(4, 2)).sum()) == pytest.approx(2.0)  # ties: ½ each


def test_pairs_take_the_top_and_bottom_decile_of_every_reward_or_the_rank_sum():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(30, 3, generator=g)
    scores[4], scores[9] = 2.0, -1.0  # best and worst on every reward
    pairs = rewards.select_pairs(scores, decile=0.1)
    assert pairs == [(4, 9)]
    # Nobody is in every reward's top three: winners by rank sum instead.
    crossed = torch.stack([torch.arange(30.0), torch.arange(30.0).flip(0), torch.arange(30.0) % 7], dim=1)
    winners = {w for w, _ in rewards.select_pairs(crossed, decile=0.1)}
    ranks = crossed.argsort(0).argsort(0).sum(1)
    assert winners == set(ranks.argsort(descending=True)[:3].tolist())
    assert len(rewards.physics_pairs(torch.arange(10.0), count=2)) == 4


def _toy_pairs(seed=0, n=16) -> PreferencePairs:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 2, 4, 8)
    return PreferencePairs(
        torch.randn(shape, generator=g),
        torch.randn(shape, generator=g),
        torch.randn(shape, generator=g),
        torch.full((n,), 6.0),
    )


def _toy_denoiser() -> Denoiser:
    torch.manual_seed(0)
    model = Denoiser(2, np.linspace(-60, 60, 4), width=8, depth=1, blocks=1, embedding=8)
    for p in model.parameters():  # FiLM starts at zero; give every weight a say
        torch.nn.init.normal_(p, std=0.1)
    return model


def test_the_dpo_loss_at_the_reference_is_log_two_with_no_gradient_for_identical_pairs():
    def gradient(pairs):
        model, reference = _toy_denoiser(), _toy_denoiser()
        loss, stats = dpo_loss(
            model, reference, model.schedule, pairs, 8000.0, torch.Generator().manual_seed(0)
        )
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return float(loss.detach()), stats, float(grads.abs().max())

    pairs = _toy_pairs()
    loss, stats, distinct = gradient(pairs)
    assert loss == pytest.approx(math.log(2)) and stats["drift"] == 0.0
    loss, _, same = gradient(PreferencePairs(pairs.winner, pairs.winner, pairs.background, pairs.lead_hours))
    assert loss == pytest.approx(math.log(2))
    assert same < 1e-6 * distinct  # round-off of the batched forward only


def test_one_dpo_step_prefers_the_winner():
    model, reference, pairs = _toy_denoiser(), _toy_denoiser(), _toy_pairs()
    config = AlignmentTraining(beta=50.0, steps=20, batch_size=16, lr=1e-3, log_every=20)
    history = align_prior(model, reference, model.schedule, pairs, pairs, config, progress=False)
    assert history.records[-1]["valid_accuracy"] > 0.7
    assert history.records[-1]["valid_loss"] < math.log(2)


def test_observations_land_in_their_nearest_cells():
    lat, lon = np.array([-30.0, 0.0, 30.0]), np.arange(4) * 90.0
    op = PointObservationOperator(
        np.array([0, 1, 1]), np.array([29.0, -31.0, -29.0]), np.array([359.0, 91.0, 89.0]), lat, lon
    )
    obs = Observations(torch.tensor([1.0, 2.0, 4.0]), torch.ones(3), op)
    values, mask = observations_on_grid(obs, lat, lon, 2)
    assert float(values[0, 2, 0]) == 1.0 and float(values[1, 0, 1]) == 3.0  # two in one cell: their mean
    assert float(mask.sum()) == 2.0


@pytest.fixture(scope="module")
def aligned(tiny_checkpoint, tiny_score_models, tmp_path_factory):
    """Preference data from the tiny prior, and the prior aligned on its multi-reward pairs."""
    from cycler_da.config import parse_config
    from cycler_da.train_align import (
        AlignmentConfig,
        PreferenceDataConfig,
        make_preference_data,
        train_alignment,
    )

    vae, prior = tiny_score_models
    root = tmp_path_factory.mktemp("align")
    data = {
        "nature": {"compiled": False},
        "train": ["2018-02-01", "2018-02-20T18"],
        "valid": ["2018-02-21", "2018-02-28T18"],
    }
    config = parse_config(
        {
            "data": data,
            "vae": str(vae),
            "prior": str(prior),
            "forecast_checkpoint": str(tiny_checkpoint),
            "backgrounds": 4,
            "valid_backgrounds": 2,
            "samples": 10,
            "steps": 2,
            "forecast_hours": 12,
            "hydrostatic": True,
        },
        PreferenceDataConfig,
    )
    summary = make_preference_data(config, root / "pairs.nc", progress=False)
    align = parse_config(
        {
            "pairs": str(root / "pairs.nc"),
            "prior": str(prior),
            "training": {"steps": 4, "batch_size": 4, "log_every": 2},
        },
        AlignmentConfig,
    )
    manifest = train_alignment(align, root / "aligned.pt", progress=False)
    return root, summary, manifest, config


def test_preference_data_holds_rewards_and_deduplicated_pairs_of_both_sets(aligned):
    root, summary, _, _ = aligned
    with xr.open_dataset(root / "pairs.nc") as ds:
        assert ds["rewards"].shape == (6, 10, 4)
        assert list(ds["reward"].values) == list(rewards.REWARDS)
        assert list(ds["lead_hours"].values) == [48, 48, 6, 6, 48, 6]
        assert set(ds["split"].values) == {"train", "valid"}
        assert ds.attrs["multi_rewards"] == "accuracy,forecast,geostrophic,hydrostatic"
        for name in ("multi", "physics"):
            pairs = ds[f"pairs_{name}"].values
            assert len(pairs) == summary[name] > 0
            assert len({tuple(p) for p in pairs}) == len(pairs)
            # winner and loser come from one background, and the winner is the better by every reward's rank sum
            background = ds["kept_background"].values
            assert (background[pairs[:, 0]] == background[pairs[:, 1]]).all()
        physics = ds["pairs_physics"].values
        geo = ds["rewards"].sel(reward="geostrophic").values
        b, sample = ds["kept_background"].values, ds["kept_sample"].values
        assert (
            geo[b[physics[:, 0]], sample[physics[:, 0]]] >= geo[b[physics[:, 1]], sample[physics[:, 1]]]
        ).all()
        assert bool(((ds["rewards"] >= 0) & (ds["rewards"] <= 1)).all())


def test_the_aligned_prior_names_its_reference_and_pairs(aligned, tiny_score_models):
    from forecast_models.checkpoint import file_hash

    root, _, manifest, _ = aligned
    _, prior = tiny_score_models
    a = manifest["alignment"]
    assert a["reference_prior_sha256"] == file_hash(prior)
    assert a["pair_file_sha256"] == file_hash(root / "pairs.nc")
    assert a["rewards"] == ["accuracy", "forecast", "geostrophic", "hydrostatic"]
    assert len(a["history"]) == 2 and "valid_accuracy" in a["history"][-1]


@pytest.mark.parametrize("guidance", ["dps", "lo-sda", "repaint", "none"])
def test_align_da_runs_every_guidance_for_a_window(aligned, tiny_score_models, guidance):
    from test_score_da import LABELS as STATE_LABELS
    from test_score_da import _context, _observations

    from score_da.align_da import AlignDAParams, build

    root, *_ = aligned
    vae, _ = tiny_score_models
    context, grid = _context(vae)
    params = AlignDAParams(
        vae=str(vae), prior=str(root / "aligned.pt"), guidance=guidance, steps=4, polish_steps=2
    )
    method = build(context, params)
    g = torch.Generator().manual_seed(3)
    truth = torch.randn(1, len(STATE_LABELS), *grid.shape, generator=g)
    background = truth + 0.3 * torch.randn(1, len(STATE_LABELS), *grid.shape, generator=g)
    obs = _observations(grid, truth)
    a = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    assert a.state.shape == background.shape and torch.isfinite(a.state).all()
    assert method.name == f"align-da ({guidance})"
    if guidance != "none":
        misfit = lambda x: float(((obs.values - obs.operator(x.double())[0]) / obs.error_std).square().mean())  # noqa: E731
        free = build(context, dataclasses.replace(params, guidance="none")).analyse(
            background, obs, generator=torch.Generator().manual_seed(0)
        )
        assert misfit(a.state) < misfit(free.state)


def test_a_prior_for_another_autoencoder_or_channel_set_is_refused(aligned, tiny_score_models, tmp_path):
    from test_score_da import _context

    from cycler_da.core import MethodContext
    from forecast_models.checkpoint import CheckpointError
    from score_da import checkpoint
    from score_da.align_da import AlignDAParams, build

    root, *_ = aligned
    vae, _ = tiny_score_models
    context, _ = _context(vae)
    manifest, state = checkpoint.read(root / "aligned.pt", "prior")
    other = tmp_path / "other.pt"
    from forecast_models.checkpoint import write_payload

    write_payload(other, checkpoint.FORMAT, {**manifest, "vae_sha256": "0" * 64}, state)
    with pytest.raises(CheckpointError, match="trained on the latents of another autoencoder"):
        build(context, AlignDAParams(vae=str(vae), prior=str(other)))
    fewer = MethodContext(context.channels[:3], context.latitudes, context.longitudes)
    with pytest.raises(CheckpointError, match="trained on channels"):
        build(fewer, AlignDAParams(vae=str(vae), prior=str(root / "aligned.pt")))


@pytest.mark.parametrize(("name", "pair_set"), [("aligned", "multi"), ("aligned-physics", "physics")])
def test_the_shipped_aligned_priors_name_the_shipped_reference(name, pair_set):
    from forecast_models.checkpoint import file_hash
    from score_da import checkpoint

    manifest, _ = checkpoint.read(checkpoint.resolve(name, "prior"), "prior")
    alignment = manifest["alignment"]
    assert alignment["reference_prior_sha256"] == file_hash(checkpoint.resolve("default", "prior"))
    assert manifest["vae_sha256"] == file_hash(checkpoint.resolve("default", "vae"))
    assert alignment["pair_set"] == pair_set and alignment["pairs"]["train"] > 1000
