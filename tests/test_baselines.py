"""3D-Var equals the BLUE on a linear-Gaussian problem; the LETKF without localisation is the ETKF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.envar import EnVarLETKF
from baselines.hybrid_gain import HybridGainLETKF
from baselines.letkf import LETKF, gaspari_cohn
from cycler_da.core import MethodContext, Observations, build_method, known_methods
from cycler_da.core.covariance import (
    BackgroundErrorStats,
    ControlTransform,
    EnsembleControlTransform,
    estimate_stats,
    gaussian_correlation,
    neighbourhood_channel_coupling,
    optimal_localization,
)
from cycler_da.core.var3d import ThreeDVar
from cycler_da.regrid import gaussian_grid
from observation_ops.operator import PointObservationOperator

GRID = gaussian_grid(4)  # 4 x 8: dense matrices stay tiny
CHANNELS = 2


def _stats() -> BackgroundErrorStats:
    std = np.array([[0.5, 0.7, 0.7, 0.5], [1.0, 0.8, 0.8, 1.0]])
    return BackgroundErrorStats(std, np.array([[1.0, 0.6], [0.6, 1.0]]), 2500.0)


def _observations(n: int = 12, seed: int = 0) -> tuple[Observations, torch.Tensor]:
    rng = np.random.default_rng(seed)
    h = PointObservationOperator(
        rng.integers(0, CHANNELS, n),
        rng.uniform(-80, 80, n),
        rng.uniform(0, 360, n),
        GRID.latitudes,
        GRID.longitudes,
    )
    y = torch.as_tensor(rng.normal(size=n))
    sigma = torch.as_tensor(rng.uniform(0.2, 0.6, n))
    return Observations(y, sigma, h), _dense(h)


def _dense(h: PointObservationOperator) -> torch.Tensor:
    eye = torch.eye(CHANNELS * GRID.latitudes.size * GRID.longitudes.size, dtype=torch.float64)
    return h(eye.reshape(-1, CHANNELS, *GRID.shape)).T  # (obs, state)


def _error_samples(members: int = 7, seed: int = 1) -> np.ndarray:
    """Errors with cross-channel structure between neighbouring places (a shifted copy)."""
    rng = np.random.default_rng(seed)
    first = rng.normal(size=(members, 1, *GRID.shape))
    second = 0.8 * np.roll(first, 1, axis=-1) + 0.6 * rng.normal(size=first.shape)
    return np.concatenate([first, second], axis=1)


def _transforms() -> dict:
    return {
        "gaussian": ControlTransform(_stats(), GRID.latitudes, GRID.longitudes, scale=1.3),
        "ensemble": EnsembleControlTransform(
            _error_samples(), GRID.latitudes, GRID.longitudes, 3000.0, scale=1.3
        ),
    }


@pytest.mark.parametrize("covariance", ["gaussian", "ensemble"])
def test_3dvar_equals_blue(covariance):
    transform = _transforms()[covariance]
    obs, h = _observations()
    x_b = torch.randn(
        1, CHANNELS, *GRID.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    b = transform.dense()
    r = torch.diag(obs.error_std**2)
    gain = b @ h.T @ torch.linalg.inv(h @ b @ h.T + r)
    blue = x_b.reshape(-1) + gain @ (obs.values - h @ x_b.reshape(-1))
    analysis = ThreeDVar(transform, max_iterations=200, tolerance=1e-10).analyse(x_b, obs)
    torch.testing.assert_close(analysis.state.reshape(-1), blue, rtol=1e-6, atol=1e-7)
    assert analysis.diagnostics["cost_final"] < analysis.diagnostics["cost_initial"]


def test_adaptive_3dvar_recovers_the_innovation_variance_and_stays_blue():
    """Backgrounds whose errors are B scaled by 4 (channel 0) and 0.5 (channel 1): the
    innovation-based factors find those scales, and the analysis is the BLUE with that B."""
    transform = ControlTransform(_stats(), GRID.latitudes, GRID.longitudes)
    lat, lon = np.meshgrid(GRID.latitudes, GRID.longitudes, indexing="ij")
    channel = np.repeat(np.arange(CHANNELS), lat.size)
    h = PointObservationOperator(
        channel,
        np.tile(lat.ravel(), CHANNELS),
        np.tile(lon.ravel(), CHANNELS),
        GRID.latitudes,
        GRID.longitudes,
    )
    sigma_o = torch.full((len(channel),), 0.3, dtype=torch.float64)
    true_factors = torch.tensor([4.0, 0.5], dtype=torch.float64)
    var = ThreeDVar(transform, max_iterations=200, tolerance=1e-10, adaptive_variance=True)
    generator = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(400):
        truth = torch.randn(1, CHANNELS, *GRID.shape, dtype=torch.float64, generator=generator)
        error = true_factors.sqrt()[:, None, None] * transform(
            torch.randn(1, *transform.shape, dtype=torch.float64, generator=generator)
        )
        y = h(truth)[0] + sigma_o * torch.randn(len(channel), dtype=torch.float64, generator=generator)
        estimates.append(var.variance_factors(truth + error, Observations(y, sigma_o, h)))
    torch.testing.assert_close(torch.stack(estimates).mean(0), true_factors, rtol=0.08, atol=0)

    obs = Observations(y, sigma_o, h)
    factors = var.variance_factors(truth + error, obs)
    scaling = torch.repeat_interleave(factors.sqrt(), lat.size)
    b = scaling[:, None] * transform.dense() * scaling[None, :]
    hd = _dense(h)
    x_b = (truth + error).reshape(-1)
    blue = x_b + b @ hd.T @ torch.linalg.solve(hd @ b @ hd.T + torch.diag(sigma_o**2), y - hd @ x_b)
    analysis = var.analyse(truth + error, obs)
    torch.testing.assert_close(analysis.state.reshape(-1), blue, rtol=1e-6, atol=1e-7)
    assert analysis.diagnostics["b_variance_factor_max"] == pytest.approx(float(factors.max()))


def test_control_transform_reproduces_statistics():
    transform = ControlTransform(_stats(), GRID.latitudes, GRID.longitudes)
    b = transform.dense().reshape(CHANNELS, *GRID.shape, CHANNELS, *GRID.shape)
    np.testing.assert_allclose(b[0, 1, 3, 0, 1, 3], 0.7**2, rtol=1e-6)  # variance
    np.testing.assert_allclose(b[0, 2, 2, 1, 2, 2], 0.6 * 0.7 * 0.8, rtol=1e-6)  # cross-channel
    assert b[0, 1, 0, 0, 1, 1] < 0.49 and b[0, 1, 0, 0, 1, 1] > 0  # decays with distance


def test_ensemble_transform_is_the_localised_sample_covariance():
    samples = _error_samples()
    full = EnsembleControlTransform(
        samples, GRID.latitudes, GRID.longitudes, 3000.0, scale=2.0, localization_variance=1.0
    )
    x = samples - samples.mean(0)
    x = x.reshape(x.shape[0], -1)
    sample_b = 4.0 * x.T @ x / (x.shape[0] - 1)
    localisation = np.tile(
        gaussian_correlation(GRID.latitudes, GRID.longitudes, 3000.0), (CHANNELS, CHANNELS)
    )
    np.testing.assert_allclose(full.dense().numpy(), sample_b * localisation, atol=1e-10)
    np.testing.assert_allclose(full.sigma.numpy().ravel() ** 2, np.diag(sample_b), rtol=1e-10)
    # The cross-channel covariance between a point and its eastern neighbour survives (the
    # Gaussian model, correlating channels only at one point, cannot hold it).
    b = full.dense().reshape(CHANNELS, *GRID.shape, CHANNELS, *GRID.shape)
    assert b[0, 1, 3, 1, 1, 4] > 0.5 * b[0, 1, 3, 1, 1, 3]
    # Truncating the localisation's spectrum shrinks the control vector and keeps diag(B)
    # consistent with sigma (which adaptive variances use).
    truncated = EnsembleControlTransform(
        samples, GRID.latitudes, GRID.longitudes, 3000.0, localization_variance=0.9
    )
    assert truncated.shape[1] < GRID.latitudes.size * GRID.longitudes.size
    np.testing.assert_allclose(
        torch.diag(truncated.dense()).numpy(), truncated.sigma.numpy().ravel() ** 2, rtol=1e-10
    )
    with pytest.raises(ValueError, match="at least 2 error samples"):
        EnsembleControlTransform(samples[:1], GRID.latitudes, GRID.longitudes, 3000.0)


def test_estimate_stats_recovers_known_structure():
    rng = np.random.default_rng(0)
    grid = gaussian_grid(8)
    transform = ControlTransform(_stats_8(), grid.latitudes, grid.longitudes)
    v = torch.as_tensor(rng.normal(size=(3000, *transform.shape)))
    samples = transform(v).numpy()
    stats = estimate_stats(samples, grid.latitudes, grid.longitudes)
    np.testing.assert_allclose(stats.std, _stats_8().std, rtol=0.08)
    np.testing.assert_allclose(stats.channel_correlation, _stats_8().channel_correlation, atol=0.06)
    assert 1200 < stats.length_scale_km < 2200  # truth 1600 km


def test_neighbourhood_coupling_finds_displaced_correlation():
    # Channel 1 is channel 0 two longitudes east (plus noise): no correlation at a point, strong
    # two grid steps apart, so only a radius that reaches two steps couples them.
    rng = np.random.default_rng(1)
    grid = gaussian_grid(32)  # 32 x 64: grid steps of ~625 km
    base = rng.normal(size=(400, 1, *grid.shape))
    displaced = np.roll(base, 2, axis=3) + 0.5 * rng.normal(size=base.shape)
    errors = np.concatenate([base, displaced, rng.normal(size=base.shape)], axis=1)
    point = np.abs(estimate_stats(errors, grid.latitudes, grid.longitudes).channel_correlation)
    near = neighbourhood_channel_coupling(errors, grid.latitudes, grid.longitudes, 700.0)
    far = neighbourhood_channel_coupling(errors, grid.latitudes, grid.longitudes, 1300.0)
    assert point[0, 1] < 0.05 and near[0, 1] < 0.15  # within one step: only sampling noise
    np.testing.assert_allclose(far[0, 1], 1 / np.sqrt(1.25), atol=0.03)  # corr(x, x + 0.5 noise)
    assert far[0, 2] < 0.15 and far[1, 2] < 0.15  # the independent channel stays uncoupled
    np.testing.assert_allclose(far, far.T)
    np.testing.assert_allclose(np.diag(far), 1.0)
    # Ménétrier's optimal factor for 40 members: ρ² / (ρ² + (1 + ρ²)/40), diagonal kept at 1.
    optimal = optimal_localization(np.array([[1.0, 0.4], [0.4, 1.0]]), 40)
    np.testing.assert_allclose(optimal, [[1.0, 0.16 / (0.16 + 1.16 / 40)], [0.16 / (0.16 + 1.16 / 40), 1.0]])


def _stats_8() -> BackgroundErrorStats:
    std = np.tile(np.linspace(0.5, 1.0, 8), (CHANNELS, 1))
    return BackgroundErrorStats(std, np.array([[1.0, -0.4], [-0.4, 1.0]]), 1600.0)


def _etkf(x: torch.Tensor, obs: Observations, h: torch.Tensor) -> torch.Tensor:
    """Textbook ETKF (Hunt et al. 2007, no localisation) with dense matrices."""
    n = x.shape[0]
    xf = x.reshape(n, -1).T  # (state, N)
    mean = xf.mean(1, keepdim=True)
    xp = xf - mean
    yp = h @ xp
    rinv = torch.diag(obs.error_std**-2)
    pa = torch.linalg.inv((n - 1) * torch.eye(n, dtype=x.dtype) + yp.T @ rinv @ yp)
    w_mean = pa @ yp.T @ rinv @ (obs.values - (h @ mean)[:, 0])
    vals, vecs = torch.linalg.eigh((n - 1) * pa)
    w = vecs @ torch.diag(vals.sqrt()) @ vecs.T + w_mean[:, None]
    return (mean + xp @ w).T.reshape(x.shape)


def test_letkf_without_localisation_is_etkf():
    obs, h = _observations(20, seed=3)
    x = torch.randn(8, CHANNELS, *GRID.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    letkf = LETKF(GRID.latitudes, GRID.longitudes, localization_km=None, rtps=0.0)
    torch.testing.assert_close(letkf.analyse(x, obs).state, _etkf(x, obs, h), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("weight", [0.0, 0.4, 1.0])
def test_hybrid_gain_is_the_etkf_then_a_weighted_blue(weight):
    """x̄_a = x̄_E + β K_B (y − H x̄_E), with x̄_E the ETKF mean; the perturbations are the ETKF's."""
    obs, h = _observations(20, seed=3)
    x = torch.randn(8, CHANNELS, *GRID.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    transform = _transforms()["ensemble"]
    letkf = LETKF(GRID.latitudes, GRID.longitudes, localization_km=None, rtps=0.0)
    var = ThreeDVar(transform, max_iterations=200, tolerance=1e-10)
    state = HybridGainLETKF(letkf, var, weight).analyse(x, obs).state
    etkf = _etkf(x, obs, h)
    mean = etkf.mean(0).reshape(-1)
    b = transform.dense()
    gain = b @ h.T @ torch.linalg.inv(h @ b @ h.T + torch.diag(obs.error_std**2))
    expected_mean = mean + weight * gain @ (obs.values - h @ mean)
    torch.testing.assert_close(state.mean(0).reshape(-1), expected_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state - state.mean(0), etkf - etkf.mean(0), rtol=1e-9, atol=1e-9)


def test_hybrid_covariance_blends_static_and_localised_ensemble_b():
    transform = _transforms()["ensemble"]
    x = torch.randn(6, CHANNELS, *GRID.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    flat = (x - x.mean(0)).reshape(6, -1).T
    taper = transform.l_sqrt_t.T @ transform.l_sqrt_t  # the truncated localisation L
    expected = 0.3 * transform.dense() + 0.7 * (flat @ flat.T / 5) * taper.repeat(CHANNELS, CHANNELS)
    hybrid = transform.hybrid(x, 0.7)
    torch.testing.assert_close(hybrid.dense(), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(
        hybrid.sigma.pow(2).reshape(-1), torch.diagonal(expected), rtol=1e-9, atol=1e-12
    )
    with pytest.raises(ValueError, match=r"ensemble covariance weight must be in \[0, 1\]; got 1.5"):
        transform.hybrid(x, 1.5)


def test_envar_letkf_is_the_blue_of_the_hybrid_b_with_etkf_perturbations():
    obs, h = _observations(20, seed=3)
    x = torch.randn(8, CHANNELS, *GRID.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    transform = _transforms()["ensemble"]
    letkf = LETKF(GRID.latitudes, GRID.longitudes, localization_km=None, rtps=0.0)
    state = (
        EnVarLETKF(letkf, ThreeDVar(transform, max_iterations=200, tolerance=1e-10), 0.5)
        .analyse(x, obs)
        .state
    )
    b = transform.hybrid(x, 0.5).dense()
    gain = b @ h.T @ torch.linalg.inv(h @ b @ h.T + torch.diag(obs.error_std**2))
    mean = x.mean(0).reshape(-1)
    torch.testing.assert_close(
        state.mean(0).reshape(-1), mean + gain @ (obs.values - h @ mean), rtol=1e-5, atol=1e-6
    )
    etkf = _etkf(x, obs, h)
    torch.testing.assert_close(state - state.mean(0), etkf - etkf.mean(0), rtol=1e-9, atol=1e-9)


def test_letkf_adaptive_inflation_matches_the_innovations():
    """Channel 0's ensemble spread is half its mean's actual error, channel 1's twice it: the
    adaptive factors are about 2 and 1 (never deflating), and with them the analysis is the
    ETKF of the inflated ensemble."""
    lat, lon = np.meshgrid(GRID.latitudes, GRID.longitudes, indexing="ij")
    channel = np.repeat(np.arange(CHANNELS), lat.size)
    h = PointObservationOperator(
        channel,
        np.tile(lat.ravel(), CHANNELS),
        np.tile(lon.ravel(), CHANNELS),
        GRID.latitudes,
        GRID.longitudes,
    )
    sigma_o = torch.full((len(channel),), 0.3, dtype=torch.float64)
    spread = torch.tensor([0.5, 2.0], dtype=torch.float64)[None, :, None, None]
    letkf = LETKF(GRID.latitudes, GRID.longitudes, localization_km=None, rtps=0.0, adaptive_inflation=True)
    generator = torch.Generator().manual_seed(0)
    factors = []
    for _ in range(200):
        truth = torch.randn(1, CHANNELS, *GRID.shape, dtype=torch.float64, generator=generator)
        mean = truth + torch.randn(truth.shape, dtype=torch.float64, generator=generator)
        pert = torch.randn(30, CHANNELS, *GRID.shape, dtype=torch.float64, generator=generator)
        members = mean + spread * (pert - pert.mean(0))
        y = h(truth)[0] + sigma_o * torch.randn(len(channel), dtype=torch.float64, generator=generator)
        factors.append(letkf.inflation_factors(members, Observations(y, sigma_o, h)))
    factors = torch.stack(factors)
    assert abs(float(factors[:, 0].mean()) - 2.0) < 0.1 and bool((factors[:, 1] == 1.0).all())

    obs = Observations(y, sigma_o, h)
    lam = letkf.inflation_factors(members, obs)[None, :, None, None]
    inflated = members.mean(0) + lam * (members - members.mean(0))
    result = letkf.analyse(members, obs)
    torch.testing.assert_close(result.state, _etkf(inflated, obs, _dense(h)), rtol=1e-9, atol=1e-9)
    assert result.diagnostics["inflation_max"] == pytest.approx(float(lam.max()))


def test_letkf_localisation_and_rtps():
    obs, _ = _observations(10, seed=5)
    x = torch.randn(
        10, CHANNELS, *GRID.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6)
    )
    local = LETKF(GRID.latitudes, GRID.longitudes, localization_km=300.0, rtps=0.0).analyse(x, obs).state
    assert torch.isfinite(local).all()
    # Columns farther than 2c = 600 km from every observation are left untouched.
    far = torch.as_tensor(_far_columns(obs, 600.0))
    assert far.any()
    torch.testing.assert_close(local[:, :, far], x[:, :, far])
    full = LETKF(GRID.latitudes, GRID.longitudes, localization_km=None, rtps=1.0).analyse(x, obs).state
    torch.testing.assert_close(full.std(0), x.std(0), rtol=1e-8, atol=1e-10)  # RTPS α=1 keeps prior spread
    with pytest.raises(ValueError, match="needs an ensemble"):
        LETKF(GRID.latitudes, GRID.longitudes).analyse(x[:1], obs)


def test_letkf_additive_inflation_draws_from_b():
    obs, _ = _observations(10, seed=7)
    context = MethodContext(
        ("z500", "t850"), GRID.latitudes, GRID.longitudes, background_error=_stats().as_dict()
    )
    x = torch.randn(
        64, CHANNELS, *GRID.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8)
    )
    gaussian = {"rtps": 0.0, "additive_covariance": "gaussian", "channel_localization": "correlation"}
    plain = build_method("enkf", context, **gaussian, additive=0.0).analyse(x, obs).state  # no additive draws
    runs = [
        build_method("enkf", context, **gaussian, additive=0.5)
        .analyse(x, obs, generator=torch.Generator().manual_seed(9))
        .state
        for _ in range(2)
    ]
    torch.testing.assert_close(runs[0], runs[1])  # the generator makes it reproducible
    torch.testing.assert_close(runs[0].mean(0), plain.mean(0))  # zero-mean: the analysis mean is kept
    # The added perturbations have B's variance × 0.5² (up to sampling error of 64 members).
    added_var = (runs[0] - plain).var(0).mean(-1)  # (channel, lat)
    expected = torch.as_tensor(0.25 * _stats().std ** 2)
    assert torch.allclose(added_var, expected, rtol=0.35)
    # additive_covariance "samples": draws from the error samples' covariance (× 0.5²).
    with_samples = MethodContext(
        ("z500", "t850"),
        GRID.latitudes,
        GRID.longitudes,
        background_error=_stats().as_dict(),
        background_error_samples=_error_samples,
    )
    drawn = (
        build_method(
            "enkf",
            with_samples,
            rtps=0.0,
            additive=0.5,
            additive_covariance="samples",
            channel_localization="correlation",
        )
        .analyse(x, obs, generator=torch.Generator().manual_seed(9))
        .state
    )
    torch.testing.assert_close(drawn.mean(0), plain.mean(0))
    expected = torch.as_tensor(0.25 * _error_samples().var(axis=0, ddof=1).mean(-1))
    assert torch.allclose((drawn - plain).var(0).mean(-1), expected, rtol=0.35)
    with pytest.raises(ValueError, match="additive_covariance must be 'gaussian' or 'samples'"):
        build_method("enkf", with_samples, additive_covariance="ensemble")
    with pytest.raises(ValueError, match="additive must be >= 0"):
        build_method("enkf", context, additive=-1.0)
    bare = MethodContext(("z500", "t850"), GRID.latitudes, GRID.longitudes)
    with pytest.raises(ValueError, match="background-error statistics"):
        build_method("enkf", bare, additive=0.5, additive_covariance="gaussian")
    with pytest.raises(ValueError, match="needs background-error samples"):
        build_method("enkf", bare, additive=0.5)


def _far_columns(obs: Observations, km: float) -> np.ndarray:
    from cycler_da.core.geometry import great_circle_km

    lat, lon = np.meshgrid(GRID.latitudes, GRID.longitudes, indexing="ij")
    d = great_circle_km(lat.ravel(), lon.ravel(), obs.operator.latitude, obs.operator.longitude)
    return (d.min(axis=1) >= km).reshape(GRID.shape)


def test_gaspari_cohn():
    d = torch.tensor([0.0, 500.0, 1000.0, 1999.0, 2000.0, 5000.0], dtype=torch.float64)
    g = gaspari_cohn(d, 1000.0)
    assert float(g[0]) == 1.0 and float(g[-1]) == 0.0 and float(g[-2]) == 0.0
    assert float(g[2]) == pytest.approx(5 / 24)  # the value at r = 1
    assert torch.all(g[:-1] >= g[1:])


def test_registry_and_observation_validation():
    assert {"none", "3dvar", "enkf"} <= set(known_methods())
    context = MethodContext(
        ("z500", "t850"), GRID.latitudes, GRID.longitudes, background_error=_stats().as_dict()
    )
    with pytest.raises(ValueError, match=r"unknown analysis method 'optimal'; known: .*3dvar.*enkf"):
        build_method("optimal", context)
    with pytest.raises(
        ValueError, match=r"\['radius'\] are not parameters of 'enkf'; allowed: localization_km, "
    ):
        build_method("enkf", context, radius=3)
    with pytest.raises(ValueError, match=r"'3dvar': b_scale: Input should be a valid number"):
        build_method("3dvar", context, b_scale="large")
    x = torch.zeros(1, CHANNELS, *GRID.shape, dtype=torch.float64)
    obs, _ = _observations()
    assert torch.equal(build_method("none", context).analyse(x, obs).state, x)
    assert isinstance(build_method("3dvar", context, covariance="gaussian", b_scale=2.0), ThreeDVar)
    with pytest.raises(ValueError, match="needs background-error samples"):
        build_method("3dvar", context)
    with_samples = MethodContext(
        ("z500", "t850"),
        GRID.latitudes,
        GRID.longitudes,
        background_error=_stats().as_dict(),
        background_error_samples=_error_samples,
    )
    assert isinstance(build_method("3dvar", with_samples).transform, EnsembleControlTransform)
    with pytest.raises(ValueError, match="length_scale_km applies to covariance 'gaussian'"):
        build_method("3dvar", with_samples, length_scale_km=800.0)
    assert isinstance(build_method("enkf", with_samples), LETKF)
    assert isinstance(build_method("hybrid-gain", with_samples, hybrid_weight=0.5), HybridGainLETKF)
    assert isinstance(build_method("envar", with_samples, envar_weight=0.5), EnVarLETKF)
    for kind in ("neighbourhood", "optimal"):
        factors = build_method("enkf", with_samples, channel_localization=kind).channel_localization
        assert factors.shape == (CHANNELS, CHANNELS) and torch.all(torch.diagonal(factors) == 1)
    with pytest.raises(ValueError, match=r"must be one of .*'neighbourhood', 'optimal'; got 'vertical'"):
        build_method("enkf", with_samples, channel_localization="vertical")
    with pytest.raises(ValueError, match=r"\['envar_weight'\] are not parameters of 'enkf'"):
        build_method("enkf", with_samples, envar_weight=0.5)
    with pytest.raises(ValueError, match=r"hybrid_weight must be in \[0, 1\]; got 2"):
        build_method("hybrid-gain", with_samples, hybrid_weight=2.0)
    with pytest.raises(ValueError, match=r"envar_weight must be in \[0, 1\]; got -0.1"):
        build_method("envar", with_samples, envar_weight=-0.1)
    with pytest.raises(ValueError, match="needs background-error samples"):
        build_method("hybrid-gain", context, hybrid_weight=0.5, additive=0.0, channel_localization="none")
    with pytest.raises(ValueError, match="covariance must be 'ensemble' or 'gaussian'; got 'spectral'"):
        build_method("3dvar", with_samples, covariance="spectral")
    with pytest.raises(ValueError, match="NaN or infinity"):
        Observations(torch.tensor([1.0, float("nan")]), torch.ones(2), obs.operator)
    with pytest.raises(ValueError, match="finite and positive"):
        Observations(torch.ones(2), torch.tensor([1.0, 0.0]), obs.operator)
