"""The diffusion prior on the grid itself (``space: state``): training, loading, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cycler_da.core import MethodContext, Observations, build_method
from cycler_da.state import Grid
from observation_ops.operator import PointObservationOperator
from score_da import checkpoint
from score_da.latent import StateSpace

LABELS = ("z500", "z850", "t500", "t850", "u250", "v250", "u500", "v500", "u850", "v850", "msl")


def _setup(prior, fraction=0.1, sigma=0.1):
    manifest, _ = checkpoint.read(prior, "prior")
    grid = Grid.from_dict(manifest["grid"])
    context = MethodContext(LABELS, grid.latitudes, grid.longitudes)
    rng = np.random.default_rng(0)
    nlat, nlon = grid.shape
    columns = rng.choice(nlat * nlon, int(fraction * nlat * nlon), replace=False)
    channel = np.repeat(np.arange(len(LABELS)), len(columns))
    i, j = np.tile(columns // nlon, len(LABELS)), np.tile(columns % nlon, len(LABELS))
    op = PointObservationOperator(
        channel, grid.latitudes[i], grid.longitudes[j], grid.latitudes, grid.longitudes
    )
    g = torch.Generator().manual_seed(5)
    truth = torch.randn(1, len(LABELS), *grid.shape, generator=g)
    background = truth + 0.5 * torch.randn(1, len(LABELS), *grid.shape, generator=g)
    y = op(truth.double())[0] + sigma * torch.as_tensor(rng.standard_normal(len(channel)))
    return context, background, Observations(y, torch.full_like(y, sigma), op)


def test_state_prior_manifest_names_its_space_and_no_autoencoder(tiny_state_prior):
    manifest, _ = checkpoint.read(tiny_state_prior, "prior")
    denoiser, _, _ = checkpoint.load_prior(tiny_state_prior)
    assert manifest["space"] == "state" and manifest["vae_sha256"] is None
    assert manifest["latent"] == {
        "channels": len(LABELS),
        "shape": list(Grid.from_dict(manifest["grid"]).shape),
    }
    # the denoiser works on the full grid: its static features have one row per grid latitude
    assert denoiser.static.shape[-2] == len(manifest["grid"]["latitudes"])


@pytest.mark.parametrize("name", ["dps", "lo-sda", "align-da"])
def test_latent_methods_sample_the_state_with_a_state_prior(tiny_state_prior, name):
    context, background, obs = _setup(tiny_state_prior)
    # `vae` names a file that does not exist: a state prior never reads it
    method = build_method(name, context, prior=str(tiny_state_prior), vae="no-such-vae.pt", steps=4)
    assert isinstance(method.space, StateSpace) and method.residual is None
    a = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    assert a.state.shape == background.shape and torch.isfinite(a.state).all()
    assert a.diagnostics["nfe"] >= 4


def test_lo_sda_with_a_state_prior_fits_the_observations(tiny_state_prior):
    context, background, obs = _setup(tiny_state_prior)
    method = build_method("lo-sda", context, prior=str(tiny_state_prior), steps=4)
    a = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    assert a.diagnostics["chi2_per_obs"] <= 1.0  # fitted to χ²/m ≤ fit_target (0.7) by the polish
    _, draw = method.begin(background)
    assert draw.offset is None  # no autoencoder residual to keep


def test_state_prior_refuses_a_run_with_other_channels(tiny_state_prior):
    from forecast_models.checkpoint import CheckpointError

    context, _, _ = _setup(tiny_state_prior)
    fewer = MethodContext(LABELS[:3], context.latitudes, context.longitudes)
    with pytest.raises(CheckpointError, match="trained on channels"):
        build_method("dps", fewer, prior=str(tiny_state_prior))
