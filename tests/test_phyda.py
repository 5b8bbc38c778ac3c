"""PhyDA: the residual set, PRDO's gradient, the VRE, the method and its ablations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cycler_da.config import parse_config
from cycler_da.core.balance import Balance
from cycler_da.normalization import NormStats
from cycler_da.state import Grid
from cycler_da.train_score import PriorTrainingConfig, VREConfig, _initialise, _prior_model
from forecast_models.checkpoint import CheckpointError, file_hash
from score_da import checkpoint, phyda
from score_da.networks import Denoiser
from score_da.physics import ResidualSet
from score_da.schedule import VPSchedule
from score_da.training import PriorObjective
from score_da.vre import VirtualReconstruction, column_observations

BALANCE = ("z500", "z850", "t500", "t850", "u500", "v500", "u850", "v850")  # conftest's balanced_state
LABELS = ("z500", "z850", "t500", "t850", "u250", "v250", "u500", "v500", "u850", "v850", "msl")


def test_residuals_are_small_for_a_balanced_state_and_one_for_the_truth_they_were_scaled_on(balanced_state):
    state, lat = balanced_state
    state = state.float()
    balance = Balance(BALANCE, lat)
    zero, one = np.zeros(len(BALANCE)), np.ones(len(BALANCE))
    g = torch.Generator().manual_seed(0)
    noisy = (
        state
        + torch.randn(4, *state.shape[1:], generator=g)
        * torch.tensor([50.0, 50, 1, 1, 3, 3, 3, 3])[:, None, None]
    )
    residuals = ResidualSet.fit(balance, zero, one, noisy, balance.terms)
    assert set(residuals.scales) == {"geostrophic", "hydrostatic", "thermal"}
    assert float(residuals(noisy).mean()) == pytest.approx(1.0, rel=1e-4)  # the truth's own magnitude
    assert float(residuals(state)) < 1e-4  # balanced: far below the noisy states'
    with pytest.raises(ValueError, match="support no thermal"):
        ResidualSet.fit(
            Balance(["z500", "u500", "v500"], lat), zero[:3], one[:3], noisy[:, [0, 4, 5]], ["thermal"]
        )


def test_prdo_penalises_tweedies_estimate_and_its_gradient_reaches_the_network():
    lat = np.linspace(-80, 80, 8)
    labels = ["z500", "z850", "t500", "t850", "u500", "v500", "u850", "v850"]
    denoiser = Denoiser(len(labels), lat, width=8, depth=1, blocks=1, embedding=8)
    torch.nn.init.normal_(denoiser.head[-1].conv.weight, std=0.1)
    schedule = VPSchedule()
    seen = []

    def physics(x0):
        seen.append(x0)
        return x0.square().flatten(1).mean(1)

    objective = PriorObjective(schedule, physics, physics_weight=0.1)
    z = torch.randn(2, len(labels), 8, 16)
    terms = objective(denoiser, z, z + 0.1, torch.zeros(2), torch.Generator().manual_seed(0))
    # replay the draws: the penalty was on Tweedie's estimate of the noisy state, not on the state
    g = torch.Generator().manual_seed(0)
    t = torch.rand(2, generator=g)
    eps = torch.randn(z.shape, generator=g)
    z_t = schedule.mu(t)[:, None, None, None] * z + schedule.sigma(t)[:, None, None, None] * eps
    with torch.no_grad():
        x0 = schedule.denoise(z_t, denoiser(z_t, t, z + 0.1, torch.zeros(2)), t[:, None, None, None])
    torch.testing.assert_close(seen[0].detach(), x0)
    assert set(terms) == {"eps", "physics", "total"}
    (grad,) = torch.autograd.grad(terms["physics"], denoiser.head[-1].conv.weight)
    assert grad.abs().max() > 0


def test_column_observations_cover_their_share_with_every_channel():
    truth = torch.randn(64, 3, 16, 32)
    values, mask = column_observations(truth, (0.1, 0.1), 0.0, torch.Generator().manual_seed(0))
    assert float(mask.mean()) == pytest.approx(0.1, abs=0.01)
    assert torch.equal(mask[:, 0], mask[:, 2])  # columns: all channels at once
    torch.testing.assert_close(values, mask * truth)


def test_the_vre_with_dense_exact_observations_reconstructs_them():
    torch.manual_seed(0)
    lat = np.linspace(-80, 80, 8)
    vre = VirtualReconstruction(["z500", "t850", "u500"], lat, width=8, depth=1)
    background = torch.zeros(1, 3, 8, 16)
    torch.testing.assert_close(vre(background, background, background), background)  # untrained: x_b
    optimiser = torch.optim.Adam(vre.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(400):
        truth = torch.randn(8, 3, 8, 16, generator=g)
        background = truth + torch.randn(truth.shape, generator=g)
        values, mask = column_observations(truth, (1.0, 1.0), 0.0, g)
        loss = (vre(values, mask, background) - truth).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    truth = torch.randn(4, 3, 8, 16, generator=g)
    background = truth + torch.randn(truth.shape, generator=g)
    with torch.no_grad():
        error = (vre(truth, torch.ones_like(truth), background) - truth).square().mean().sqrt()
    assert float(error) < 0.15  # the background is 1.0 off; ignoring the observations leaves >= 0.7


@pytest.mark.parametrize(("prdo", "vre"), [(True, True), (False, True), (True, False), (False, False)])
def test_phyda_runs_a_window_with_and_without_each_ablation(tiny_phyda_priors, prior_window, prdo, vre):
    prior = tiny_phyda_priors[(prdo, vre)]
    context, background, obs = prior_window(prior, members=2)
    params = phyda.PhyDAParams(prior=str(prior), prdo=prdo, vre=vre, steps=4, scale=0.1)
    method = phyda.build(context, params)
    assert (method.vre is not None) == vre
    a = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    b = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    assert a.state.shape == background.shape and torch.isfinite(a.state).all()
    assert torch.equal(a.state, b.state)
    assert ("vre_chi2_per_obs" in a.diagnostics) == vre
    manifest, _ = checkpoint.read(prior, "prior")
    assert ("prdo" in manifest) == prdo
    if prdo:
        assert set(manifest["prdo"]["truth_rms"]) == {"geostrophic", "hydrostatic", "thermal"}


def test_phyda_refuses_a_prior_trained_otherwise_and_dps_refuses_a_vre_prior(tiny_phyda_priors, prior_window):
    prior = tiny_phyda_priors[(True, True)]
    context, _, _ = prior_window(prior)
    with pytest.raises(
        CheckpointError, match=r"trained with prdo=True, vre=True, but the parameters ask for prdo=False"
    ):
        phyda.build(context, phyda.PhyDAParams(prior=str(prior), prdo=False))
    with pytest.raises(
        CheckpointError, match="is a PhyDA prior: it conditions on the observations through its VRE"
    ):
        checkpoint.load_prior(prior)


def test_a_vre_prior_started_from_a_plain_one_starts_as_the_parent(tiny_state_prior):
    parent, _, manifest = checkpoint.load_prior(tiny_state_prior)
    grid, stats = Grid.from_dict(manifest["grid"]), NormStats.from_dict(manifest["normalisation"])
    config = parse_config(
        {
            "data": {"channels": manifest["channels"]},
            "space": "state",
            "model": manifest["architecture"],
            "vre": {"enabled": True, "width": 8, "depth": 1},
            "init_from": str(tiny_state_prior),
        },
        PriorTrainingConfig,
    )
    model = _prior_model(config, len(LABELS), grid.latitudes, manifest["architecture"] | {"conditions": 2})
    assert _initialise(model, config, grid, stats)["sha256"] == file_hash(tiny_state_prior)
    g = torch.Generator().manual_seed(0)
    x_t, x_b, anything = (torch.randn(2, len(LABELS), *grid.shape, generator=g) for _ in range(3))
    t, lead = torch.tensor([0.3, 0.8]), torch.zeros(2)
    with torch.no_grad():
        torch.testing.assert_close(
            model.denoiser(x_t, t, torch.cat([x_b, anything], 1), lead), parent(x_t, t, x_b, lead)
        )
        torch.testing.assert_close(model.vre(anything, torch.ones_like(x_b), x_b), x_b)
    latent = config.model_copy(update={"space": "latent", "vre": VREConfig()})
    with pytest.raises(CheckpointError, match=r"init_from: .* is a state-space prior with architecture"):
        _initialise(parent, latent, grid, stats)


SHIPPED_STATE_PRIORS = [
    ("state-default", "prior_t21_state.yaml", False, False),
    ("phyda", "phyda_t21.yaml", True, True),
]


@pytest.mark.parametrize(("name", "config", "prdo", "vre"), SHIPPED_STATE_PRIORS)
def test_shipped_state_priors_were_made_from_their_configs_the_phyda_ones_from_the_state_prior(
    name, config, prdo, vre
):
    from pathlib import Path

    from cycler_da.config import load_config

    path = checkpoint.resolve(name, "prior")
    manifest, _ = checkpoint.read(path, "prior")
    assert checkpoint.in_state_space(manifest) and ("prdo" in manifest, "vre" in manifest) == (prdo, vre)
    assert phyda.SHIPPED_PRIORS[(prdo, vre)] == name and list(manifest["channels"]) == list(LABELS)
    made_from = load_config(Path(__file__).parents[1] / "configs" / config, PriorTrainingConfig)
    assert manifest["training"]["config"] == made_from.model_dump(mode="json")
    if name != "state-default":
        parent = checkpoint.resolve("state-default", "prior")
        assert manifest["training"]["init_from"]["sha256"] == file_hash(parent)
