"""Verification metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cycler_da import metrics
from cycler_da.regrid import gaussian_grid

GRID = gaussian_grid(8)  # 8 x 16 Gaussian grid
W = GRID.area_weights()


def test_weights_and_constant_fields():
    assert W.mean() == pytest.approx(1.0) and np.all(W > 0)
    truth = np.zeros(GRID.shape)
    assert metrics.mse(truth + 3.0, truth, W) == pytest.approx(9.0)
    assert metrics.bias(truth - 2.0, truth, W) == pytest.approx(-2.0)
    # Known weights: two latitude rows of weight 0.5 and 1.5.
    field = np.array([[2.0, 2.0], [6.0, 6.0]])
    assert metrics.area_mean(field, np.array([0.5, 1.5])) == pytest.approx((0.5 * 2 + 1.5 * 6) / 2)


def test_rmse_is_sqrt_of_time_mean_mse():
    per_window = np.array([1.0, 9.0])  # RMSEs 1 and 3
    assert metrics.rmse_over_time(per_window) == pytest.approx(np.sqrt(5.0))  # not (1 + 3) / 2


def test_acc_of_perfect_and_reversed_anomalies():
    rng = np.random.default_rng(0)
    clim = rng.normal(size=GRID.shape)
    truth = clim + rng.normal(size=GRID.shape)
    assert metrics.acc(truth, truth, clim, W) == pytest.approx(1.0)
    assert metrics.acc(2 * clim - truth, truth, clim, W) == pytest.approx(-1.0)


def test_crps():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=GRID.shape)
    one = truth[None] + 0.7
    assert metrics.crps(one, truth, W) == pytest.approx(0.7)  # a single member: the absolute error
    two = np.stack([truth - 1.0, truth + 1.0])  # E|X−y| = 1, fair E|X−X'| = 2
    assert metrics.crps(two, truth, W) == pytest.approx(0.0, abs=1e-12)
    members = rng.normal(size=(7, *GRID.shape))
    brute = np.abs(members - truth).mean(0) - 0.5 * np.abs(members[:, None] - members[None]).sum((0, 1)) / (
        7 * 6
    )
    assert metrics.crps(members, truth, W) == pytest.approx(metrics.area_mean(brute, W))


def test_rank_histogram_and_spread_skill():
    rng = np.random.default_rng(2)
    members = rng.normal(size=(9, *GRID.shape))
    hist = metrics.rank_histogram(members, members.max(0) + 1)
    assert hist.sum() == np.prod(GRID.shape) and hist[-1] == hist.sum()
    assert len(metrics.rank_histogram(members, rng.normal(size=GRID.shape))) == 10
    # A calibrated ensemble (truth another draw) has spread/skill near 1.
    m, t = rng.normal(size=(400, 20, *GRID.shape)), rng.normal(size=(400, *GRID.shape))
    spread = np.stack([metrics.ensemble_spread(m[k], W) ** 2 for k in range(400)])
    error = np.stack([metrics.mse(m[k].mean(0), t[k], W) for k in range(400)])
    assert metrics.spread_skill(spread, error, 20) == pytest.approx(1.0, abs=0.03)


def test_paired_test_accounts_for_autocorrelation():
    rng = np.random.default_rng(3)
    white = rng.normal(size=400)
    assert metrics.effective_sample_size(white) == pytest.approx(400, rel=0.2)
    red = np.zeros(400)
    for k in range(1, 400):
        red[k] = 0.9 * red[k - 1] + rng.normal()
    assert metrics.effective_sample_size(red) < 40
    ref = rng.normal(size=100)
    assert metrics.paired_test(ref, ref) == (0.0, 1.0)
    mean, p = metrics.paired_test(ref + 1.0 + 0.1 * rng.normal(size=100), ref)
    assert mean == pytest.approx(1.0, abs=0.05) and p < 1e-6
    # The same mean difference is less significant when the differences are autocorrelated.
    _, p_white = metrics.paired_test(ref + 0.2 + white[:100], ref)
    _, p_red = metrics.paired_test(ref + 0.2 + red[:100] * np.std(white) / np.std(red), ref)
    assert p_red > p_white


def test_zonal_power_spectrum_keeps_parseval():
    lon = np.radians(GRID.longitudes)
    field = np.cos(3 * lon)[None, :] * np.ones(GRID.shape)
    power = metrics.zonal_power_spectrum(field, W)
    assert power[3] == pytest.approx(0.5) and power.sum() == pytest.approx(0.5)  # Parseval
