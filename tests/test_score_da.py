"""Score-based DA: schedule, sampler correctness, trained prior, DPS and LO-SDA, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cycler_da.core import MethodContext, Observations, build_method, known_methods
from cycler_da.regrid import gaussian_grid
from forecast_models.checkpoint import CheckpointError
from observation_ops.operator import PointObservationOperator
from score_da import checkpoint
from score_da.checkpoint import load_latent_space, load_prior
from score_da.dps import DPS, DPSParams
from score_da.latent import AutoencoderConfig, LatentSpace, StateSpace
from score_da.latent_3dvar import LatentThreeDVar, LatentThreeDVarParams
from score_da.networks import Denoiser
from score_da.sampling import Draw
from score_da.schedule import VPSchedule
from score_da.training import Pairs, PriorObjective, PriorTraining, lead_code, train_prior

LABELS = ("z500", "z850", "t500", "t850", "u250", "v250", "u500", "v500", "u850", "v850", "msl")


def test_schedule_end_points_and_variance_preserving():
    s = VPSchedule(1e-3)
    t = torch.linspace(0, 1, 11)
    assert float(s.mu(torch.tensor(0.0))) == pytest.approx(1.0)
    assert float(s.sigma(torch.tensor(0.0))) == pytest.approx(1e-3)
    assert float(s.mu(torch.tensor(1.0))) == pytest.approx(1e-3, rel=1e-4)
    assert torch.allclose(s.mu(t) ** 2 + s.sigma(t) ** 2, torch.full_like(t, 1 + 1e-6), atol=1e-6)
    assert (s.mu(t).diff() < 0).all()
    assert lead_code(6.0) == pytest.approx(0.0) and lead_code(48.0) == pytest.approx(1.0)


class _GaussianOracle(torch.nn.Module):
    """The exact ε of z | z_b ~ N(a z_b, v): tests the sampler apart from any training."""

    def __init__(self, schedule, a=0.8, v=0.36):
        super().__init__()
        self.schedule, self.a, self.v = schedule, a, v

    def forward(self, z_t, t, z_b, lead):
        mu, sigma = self.schedule.mu(t), self.schedule.sigma(t)
        return sigma * (z_t - mu * self.a * z_b) / (mu**2 * self.v + sigma**2)


@pytest.mark.parametrize("stochastic", [True, False])
def test_sampler_with_exact_score_draws_the_target_distribution(stochastic):
    schedule = VPSchedule()
    params = DPSParams(steps=128, scale=0.0, stochastic=stochastic)
    sampler = DPS(None, _GaussianOracle(schedule), schedule, params)
    z_b = torch.randn(1, 2, 4, 8, generator=torch.Generator().manual_seed(1)).expand(2000, -1, -1, -1)
    draw = Draw(z_b, None)
    z = sampler.sample_latent(z_b, None, draw, torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), 0.8 * z_b[0], atol=0.05)
    assert float(z.var(0).mean()) == pytest.approx(0.36, rel=0.08)
    assert draw.counters["nfe"] == 128


def test_mean_of_k_posterior_draws_has_a_kth_of_their_variance():
    """samples = K: each member's analysis is the mean of K draws, so its variance is v / K."""
    schedule = VPSchedule()
    latitudes, longitudes = np.array([-67.5, -22.5, 22.5, 67.5]), np.arange(8) * 45.0
    operator = PointObservationOperator(np.array([0]), latitudes[:1], longitudes[:1], latitudes, longitudes)
    obs = Observations(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64), operator)
    z_b = torch.randn(1, 2, 4, 8, generator=torch.Generator().manual_seed(1)).expand(1500, -1, -1, -1)
    for k in (1, 4):
        params = DPSParams(steps=128, scale=0.0, samples=k)
        sampler = DPS(StateSpace(), _GaussianOracle(schedule), schedule, params)
        analysis = sampler.analyse(z_b, obs, generator=torch.Generator().manual_seed(0))
        assert analysis.state.shape == z_b.shape
        assert torch.allclose(analysis.state.mean(0), 0.8 * z_b[0], atol=0.05)
        assert float(analysis.state.var(0).mean()) == pytest.approx(0.36 / k, rel=0.08)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        DPSParams(samples=0)


def test_trained_tiny_prior_matches_the_training_distribution():
    """A prior trained in seconds on z = 0.8 z_b + 0.6 ξ samples about that mean and variance."""
    torch.manual_seed(0)
    latitudes = np.array([-67.5, -22.5, 22.5, 67.5])
    n = 512
    z_b = torch.randn(n, 2, 4, 8)
    pairs = Pairs(0.8 * z_b + 0.6 * torch.randn(n, 2, 4, 8), torch.arange(n), z_b, torch.full((n,), 6.0))
    make = lambda: Denoiser(2, latitudes, width=16, depth=1, blocks=1, embedding=32)  # noqa: E731
    denoiser, ema = make(), make()
    ema.load_state_dict(denoiser.state_dict())
    config = PriorTraining(steps=400, batch_size=64, lr=2e-3, ema=0.99, log_every=400)
    history = train_prior(
        denoiser, ema, PriorObjective(denoiser.schedule), pairs, pairs, config, progress=False
    )
    assert history.records[-1]["valid_loss_ema"] < 0.5  # an untrained ε-predictor scores about 1
    sampler = DPS(None, ema, ema.schedule, DPSParams(steps=32, scale=0.0))
    condition = z_b[:1].expand(400, -1, -1, -1)
    z = sampler.sample_latent(condition, None, Draw(condition, None), torch.Generator().manual_seed(0))
    assert (z.mean(0) - 0.8 * condition[0]).abs().mean() < 0.2
    assert float(z.var(0).mean()) == pytest.approx(0.36, rel=0.3)


def _context(grid_path, error_samples=True):
    """The tiny models' run context, with training-set error samples (as a run has) unless told otherwise."""
    from cycler_da.state import Grid

    manifest, _ = checkpoint.read(grid_path, "vae")
    grid = Grid.from_dict(manifest["grid"])
    errors = 0.5 * np.random.default_rng(11).standard_normal((30, len(LABELS), *grid.shape))
    samples = (lambda: errors) if error_samples else None
    return MethodContext(LABELS, grid.latitudes, grid.longitudes, background_error_samples=samples), grid


def _observations(grid, truth, fraction=0.05, sigma=0.1, seed=0):
    rng = np.random.default_rng(seed)
    nlat, nlon = grid.shape
    columns = rng.choice(nlat * nlon, int(fraction * nlat * nlon), replace=False)
    channel = np.repeat(np.arange(len(LABELS)), len(columns))
    i, j = np.tile(columns // nlon, len(LABELS)), np.tile(columns % nlon, len(LABELS))
    op = PointObservationOperator(
        channel, grid.latitudes[i], grid.longitudes[j], grid.latitudes, grid.longitudes
    )
    y = op(truth.double())[0] + sigma * torch.as_tensor(rng.standard_normal(len(channel)))
    return Observations(y, torch.full_like(y, sigma), op)


def test_score_methods_are_registered():
    assert {"dps", "lo-sda", "latent-3dvar", "align-da"} <= set(known_methods())


def test_latent_3dvar_with_a_linear_autoencoder_is_the_blue():
    """Identity encoder and decoder: L3DVar is 3D-Var with B = diag(b_scale · var(e_k)), whose
    minimum is the BLUE x_b + B Hᵀ (H B Hᵀ + R)⁻¹ (y − H x_b)."""
    g = torch.Generator().manual_seed(2)
    latitudes, longitudes = np.array([-67.5, -22.5, 22.5, 67.5]), np.arange(8) * 45.0
    errors = torch.randn(50, 2, 4, 8, generator=g) * torch.linspace(0.5, 2.0, 8)
    channel = np.array([0, 0, 1, 1, 1])
    operator = PointObservationOperator(
        channel,
        np.array([-60.0, 10.0, 30.0, -20.0, 67.5]),
        np.array([10.0, 100.0, 200.0, 300.0, 45.0]),
        latitudes,
        longitudes,
    )
    background = torch.randn(1, 2, 4, 8, generator=g)
    y = torch.randn(5, dtype=torch.float64, generator=g)
    obs = Observations(y, torch.full_like(y, 0.5), operator)
    params = LatentThreeDVarParams(b_scale=1.5, max_iterations=200, tolerance=1e-9)
    method = LatentThreeDVar(StateSpace(), errors, params)
    analysis = method.analyse(background, obs)
    h = operator(torch.eye(64, dtype=torch.float64).reshape(64, 2, 4, 8)).T  # (obs, state)
    b = torch.diag(1.5 * errors.double().var(0, unbiased=False).flatten())
    x_b = background.double().flatten()
    gain = b @ h.T @ torch.linalg.inv(h @ b @ h.T + 0.25 * torch.eye(5, dtype=torch.float64))
    blue = x_b + gain @ (y - h @ x_b)
    torch.testing.assert_close(analysis.state.double().flatten(), blue, atol=1e-4, rtol=0)
    assert analysis.diagnostics["iterations"] >= 1
    with pytest.raises(ValueError, match="b_scale must be positive"):
        LatentThreeDVarParams(b_scale=0.0)


def test_latent_3dvar_builds_from_the_run_context_and_fits_the_observations(tiny_score_models):
    import dataclasses

    vae, _ = tiny_score_models
    context, grid = _context(vae, error_samples=False)
    with pytest.raises(ValueError, match="needs background-error samples"):
        build_method("latent-3dvar", context, vae=str(vae))
    g = torch.Generator().manual_seed(6)
    errors = 0.5 * torch.randn(40, len(LABELS), *grid.shape, generator=g)
    context = dataclasses.replace(context, background_error_samples=lambda: errors.numpy())
    method = build_method("latent-3dvar", context, vae=str(vae), b_scale=4.0)
    truth = torch.randn(1, len(LABELS), *grid.shape, generator=g)
    background = truth + 0.5 * torch.randn(2, len(LABELS), *grid.shape, generator=g)
    obs = _observations(grid, truth)
    a, b = method.analyse(background, obs), method.analyse(background, obs)
    assert a.state.shape == background.shape and torch.isfinite(a.state).all()
    assert torch.equal(a.state, b.state)  # deterministic: no draws

    def misfit(state):
        return float(((obs.values - obs.operator(state.double())) / obs.error_std).square().mean())

    assert misfit(a.state) < 0.8 * misfit(background)


@pytest.mark.parametrize("name", ["dps", "lo-sda"])
def test_methods_shapes_finiteness_and_determinism(tiny_score_models, name):
    vae, prior = tiny_score_models
    context, grid = _context(vae)
    method = build_method(name, context, vae=str(vae), prior=str(prior), steps=8)
    g = torch.Generator().manual_seed(3)
    truth = torch.randn(1, len(LABELS), *grid.shape, generator=g)
    background = truth + 0.3 * torch.randn(3, len(LABELS), *grid.shape, generator=g)
    obs = _observations(grid, truth)
    a = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    b = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    c = method.analyse(background, obs, generator=torch.Generator().manual_seed(1))
    assert a.state.shape == background.shape and torch.isfinite(a.state).all()
    assert torch.equal(a.state, b.state)
    assert not torch.equal(a.state, c.state)
    assert a.diagnostics["nfe"] == 8 and np.isfinite(a.diagnostics["chi2_per_obs"])
    averaged = build_method(name, context, vae=str(vae), prior=str(prior), steps=8, samples=2)
    d = averaged.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    assert d.state.shape == background.shape and torch.isfinite(d.state).all()
    assert not torch.equal(a.state, d.state)


def test_lo_sda_averages_draws_only_in_a_one_member_run(tiny_score_models):
    import dataclasses

    vae, prior = tiny_score_models
    context, _ = _context(vae)
    paths = {"vae": str(vae), "prior": str(prior)}
    assert build_method("lo-sda", context, **paths).samples == 4
    assert build_method("lo-sda", dataclasses.replace(context, members=3), **paths).samples == 1
    assert build_method("lo-sda", dataclasses.replace(context, members=3), samples=2, **paths).samples == 2
    assert build_method("dps", context, **paths).samples == 1


def test_background_residual_turns_the_latent_sample_into_an_increment(tiny_score_models):
    vae, prior = tiny_score_models
    context, grid = _context(vae)
    g = torch.Generator().manual_seed(4)
    background = torch.randn(2, len(LABELS), *grid.shape, generator=g)
    obs = _observations(grid, background[:1])
    runs = {}
    for weight in (0.0, 0.5, 1.0):
        method = build_method(
            "dps", context, vae=str(vae), prior=str(prior), steps=4, scale=0.0, background_residual=weight
        )
        with torch.no_grad():
            z_b, draw = method.begin(background)
            # weight 1: the background's own latent decodes to the background exactly
            assert torch.allclose(method.decode(z_b, draw), background, atol=1e-5) == (weight == 1.0)
        runs[weight] = method.analyse(background, obs, generator=torch.Generator().manual_seed(0)).state
    # unguided, the latent sample is the same; only the weighted autoencoder residual is added
    with torch.no_grad():
        residual = background - method.space.decode(method.space.encode(background))
    assert residual.abs().max() > 0.1
    for weight in (0.5, 1.0):
        torch.testing.assert_close(runs[weight] - runs[0.0], weight * residual, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"background_residual must be in \[0, 1\]"):
        build_method("lo-sda", context, vae=str(vae), prior=str(prior), background_residual=1.5)


def test_lo_sda_fits_its_observations_within_their_error(tiny_score_models):
    vae, prior = tiny_score_models
    context, grid = _context(vae)
    space, _ = load_latent_space(vae)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a truth the decoder can represent, so the fit is the method's doing
        z = torch.randn(
            1, space.autoencoder.latent_channels, grid.shape[0] // 2, grid.shape[1] // 2, generator=g
        )
        truth = space.decode(z)
        background = space.decode(z + 3 * torch.randn(2, *z.shape[1:], generator=g))
    obs = _observations(grid, truth, fraction=0.05)
    before = ((obs.values - obs.operator(background.double())) / obs.error_std).square().mean(dim=1).sqrt()
    method = build_method(
        "lo-sda", context, vae=str(vae), prior=str(prior), steps=8, polish_steps=200, lr=0.1
    )
    result = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    rms = ((obs.values - obs.operator(result.state.double())) / obs.error_std).square().mean(dim=1).sqrt()
    assert (before > 3).all(), before  # the backgrounds misfit by several σ_o
    assert (rms < 1.5).all(), rms  # the analyses fit to within their error, every member
    assert result.diagnostics["chi2_per_obs"] < 1.5**2


def test_anomaly_space_fits_its_statistics_and_inverts_them():
    grid = gaussian_grid(4)
    space = LatentSpace.build(
        AutoencoderConfig(latent_channels=2, width=8, anomalies=True), LABELS[:3], grid.latitudes
    )
    g = torch.Generator().manual_seed(0)
    offset = torch.randn(3, grid.shape[0], 1, generator=g)
    scale = torch.tensor([0.3, 1.0, 2.0])[:, None, None]
    series = offset + scale * torch.randn(4000, 3, *grid.shape, generator=g)
    space.fit_anomalies(series)
    torch.testing.assert_close(space.state_offset, offset, atol=0.03, rtol=0)
    torch.testing.assert_close(space.state_scale, scale, rtol=0.02, atol=0)
    x = series[:2]
    torch.testing.assert_close(space.from_autoencoder(space.to_autoencoder(x)), x)
    z = space.encode(x)
    torch.testing.assert_close(space.decode(z), space.from_autoencoder(space.autoencoder.decode(z)))
    with pytest.raises(ValueError, match="encodes states, not anomalies"):
        LatentSpace.build(
            AutoencoderConfig(latent_channels=2, width=8), LABELS[:3], grid.latitudes
        ).fit_anomalies(x)


def test_anomaly_autoencoder_trains_and_keeps_its_statistics(tmp_path):
    from cycler_da.config import parse_config
    from cycler_da.train_score import VaeTrainingConfig, _series, train_vae

    data = {
        "nature": {"compiled": False},
        "train": ["2018-02-01", "2018-02-10T18"],
        "valid": ["2018-02-21", "2018-02-22T18"],
    }
    cfg = parse_config(
        {
            "data": data,
            "model": {"latent_channels": 4, "width": 8, "anomalies": True},
            "training": {"epochs": 1, "batch_size": 8},
        },
        VaeTrainingConfig,
    )
    manifest = train_vae(cfg, tmp_path / "vae.pt", progress=False)
    assert manifest["architecture"]["anomalies"] is True
    space, _ = load_latent_space(tmp_path / "vae.pt")
    train = _series(cfg.data, "cpu", False)[0]
    torch.testing.assert_close(space.state_offset, train.mean(dim=(0, 3))[:, :, None])
    assert np.isfinite(list(manifest["validation"]["reconstruction_rmse"].values())).all()
    # The autoencoder saw unit-scale anomalies: its latents are standardised over them.
    with torch.no_grad():
        z = space.encode(train[:16])
    assert z.shape == (16, 4, 16, 32) and abs(float(z.mean())) < 0.5


@pytest.mark.parametrize("name", sorted(checkpoint.SHIPPED["vae"]))
def test_shipped_checkpoints_resolve_by_name_and_pair_up(name):
    from forecast_models.checkpoint import file_hash

    vae, prior = checkpoint.resolve(name, "vae"), checkpoint.resolve(name, "prior")
    assert vae.is_file() and prior.is_file()
    vae_manifest, _ = checkpoint.read(vae, "vae")
    prior_manifest, _ = checkpoint.read(prior, "prior")
    assert prior_manifest["vae_sha256"] == file_hash(vae)  # each prior was trained on its own autoencoder
    assert list(vae_manifest["channels"]) == list(LABELS)
    assert checkpoint.resolve("runs/my-vae.pt", "vae") == Path("runs/my-vae.pt")


def test_checkpoint_errors_are_clear(tiny_score_models, tmp_path):
    vae, prior = tiny_score_models
    with pytest.raises(CheckpointError, match="'vae' model, not a 'prior'"):
        load_prior(vae)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_latent_space(bad)
    with pytest.raises(FileNotFoundError, match="no such vae checkpoint"):
        load_latent_space(tmp_path / "missing.pt")
    other = tmp_path / "other-vae.pt"
    manifest, _ = checkpoint.read(vae, "vae")
    space, _ = load_latent_space(vae)
    torch.nn.init.normal_(next(space.parameters()))
    checkpoint.save(other, space, manifest)
    context, _ = _context(vae)
    with pytest.raises(CheckpointError, match="another autoencoder"):
        build_method("dps", context, vae=str(other), prior=str(prior))
    fewer = MethodContext(LABELS[:3], context.latitudes, context.longitudes)
    with pytest.raises(CheckpointError, match="trained on channels"):
        build_method("lo-sda", fewer, vae=str(vae), prior=str(prior))


@pytest.mark.parametrize(("name", "members", "params"), [("dps", 2, {"scale": 0.05}), ("lo-sda", 1, {})])
def test_cycle_with_score_methods(tmp_path, tiny_checkpoint, tiny_score_models, name, members, params):
    import xarray as xr
    import yaml

    from cycler_da.config import parse_config
    from cycler_da.driver import resolve, run_cycle
    from cycler_da.run_config import RunConfig

    vae, prior = tiny_score_models
    cfg = parse_config(
        {
            "run": {"start": "2018-02-10", "days": 0.5, "runs_dir": str(tmp_path / "runs")},
            "truth": {"nature": {"compiled": False}, "train_period": ["2018-02-01", "2018-02-20T18"]},
            "forecast": {"checkpoint": str(tiny_checkpoint), "from_hours": []},
            "observations": {"networks": [{"kind": "columns", "fraction": 0.1}]},
            "method": {"name": name, "params": {"vae": str(vae), "prior": str(prior), "steps": 4, **params}},
            "ensemble": {"members": members},
        },
        RunConfig,
    )
    run_dir = run_cycle(cfg, progress=False)
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["method"]["params"]["steps"] == 4 and resolved["method"]["params"]["lead_hours"] == 6.0
    with xr.open_dataset(run_dir / "analysis" / "20180210T12.nc") as analysis:
        assert analysis.sizes["realization"] == members
        # (no z250 channel: that level of geopotential is NaN by design)
        assert np.isfinite(analysis["geopotential"].sel(level=[500, 850]).values).all()
    with xr.open_dataset(run_dir / "scores.nc") as scores:
        assert np.isfinite(scores["analysis_rmse"].values).all()
    assert resolve(cfg).ensemble.members == members


class _ConstantDecoder(torch.nn.Module):
    """An autoencoder that represents nothing: every latent decodes to zeros."""

    def encode(self, x):
        return x

    def decode(self, z):
        return torch.zeros_like(z)


def _small_problem(seed=4):
    g = torch.Generator().manual_seed(seed)
    latitudes, longitudes = np.array([-67.5, -22.5, 22.5, 67.5]), np.arange(8) * 45.0
    errors = torch.randn(30, 2, 4, 8, generator=g) * torch.linspace(0.5, 2.0, 8)
    operator = PointObservationOperator(
        np.array([0, 0, 1, 1, 1]),
        np.array([-60.0, 10.0, 30.0, -20.0, 67.5]),
        np.array([10.0, 100.0, 200.0, 300.0, 45.0]),
        latitudes,
        longitudes,
    )
    y = torch.randn(5, dtype=torch.float64, generator=g)
    state = torch.randn(1, 2, 4, 8, generator=g)
    return latitudes, longitudes, errors, Observations(y, torch.full_like(y, 0.5), operator), state


def test_ensemble_transform_over_other_samples_is_theirs():
    from cycler_da.core.covariance import EnsembleControlTransform

    latitudes, longitudes, errors, _, _ = _small_problem()
    other = 3 * torch.randn(12, 2, 4, 8, generator=torch.Generator().manual_seed(5))
    base = EnsembleControlTransform(errors.double().numpy(), latitudes, longitudes, 2000.0, scale=1.5)
    fresh = EnsembleControlTransform(other.double().numpy(), latitudes, longitudes, 2000.0, scale=1.5)
    swapped = base.with_samples(other)
    torch.testing.assert_close(swapped.dense(), fresh.dense())
    torch.testing.assert_close(swapped.sigma, fresh.sigma)
    torch.testing.assert_close(
        base.dense(),
        EnsembleControlTransform(errors.double().numpy(), latitudes, longitudes, 2000.0, scale=1.5).dense(),
    )  # the original is untouched
    with pytest.raises(ValueError, match="at least 2 error samples"):
        base.with_samples(other[:1])


def test_residual_analysis_is_the_blue_of_the_unrepresented_errors():
    """A decoder that represents nothing leaves every error to B_r: the step is the BLUE with the
    errors' localised covariance; an autoencoder that represents everything leaves it nothing."""
    from score_da.residual import ResidualAnalysis

    latitudes, longitudes, errors, obs, state = _small_problem()
    step = ResidualAnalysis(
        _ConstantDecoder(), errors, latitudes, longitudes, 2000.0, b_scale=1.2, max_iterations=200
    )
    analysis, diagnostics = step.analyse(state, state, obs)
    b = step.transform.with_samples(errors).dense()
    h = obs.operator(torch.eye(64, dtype=torch.float64).reshape(64, 2, 4, 8)).T
    x = state.double().flatten()
    blue = x + b @ h.T @ torch.linalg.solve(
        h @ b @ h.T + 0.25 * torch.eye(5, dtype=torch.float64), obs.values - h @ x
    )
    torch.testing.assert_close(analysis.double().flatten(), blue, atol=1e-4, rtol=0)
    assert 0 < diagnostics["residual_cost_reduction"] <= 1
    untouched, _ = ResidualAnalysis(StateSpace(), errors, latitudes, longitudes).analyse(state, state, obs)
    torch.testing.assert_close(untouched, state)
    with pytest.raises(ValueError, match="must be positive"):
        ResidualAnalysis(StateSpace(), errors, latitudes, longitudes, b_scale=0.0)


@pytest.mark.parametrize("name", ["lo-sda", "latent-3dvar"])
def test_residual_analysis_draws_the_analysis_closer_to_the_observations(tiny_score_models, name):
    import dataclasses

    vae, prior = tiny_score_models
    context, grid = _context(vae, error_samples=False)
    params = {
        "vae": str(vae),
        **({"prior": str(prior), "steps": 4, "samples": 1} if name == "lo-sda" else {}),
    }
    with pytest.raises(ValueError, match="residual_analysis needs background-error samples"):
        build_method("lo-sda", context, vae=str(vae), prior=str(prior))  # on by default
    g = torch.Generator().manual_seed(7)
    errors = 0.5 * torch.randn(40, len(LABELS), *grid.shape, generator=g)
    context = dataclasses.replace(context, background_error_samples=lambda: errors.numpy())
    truth = torch.randn(1, len(LABELS), *grid.shape, generator=g)
    background = truth + 0.5 * torch.randn(1, len(LABELS), *grid.shape, generator=g)
    obs = _observations(grid, truth)
    plain = build_method(name, context, **params, residual_analysis=False).analyse(
        background, obs, generator=torch.Generator().manual_seed(0)
    )
    method = build_method(name, context, **params, residual_analysis=True, residual_b_scale=2.0)
    refined = method.analyse(background, obs, generator=torch.Generator().manual_seed(0))
    assert refined.state.shape == background.shape and torch.isfinite(refined.state).all()
    assert refined.diagnostics["chi2_per_obs"] < plain.diagnostics["chi2_per_obs"]
    assert refined.diagnostics["residual_iterations"] >= 1
