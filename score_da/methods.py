"""Registers the latent-space analysis methods ``dps``, ``lo-sda`` and ``latent-3dvar``.

Both load the autoencoder and the diffusion prior from checkpoints (a path, or the name of
shipped weights: "default" or "anomaly", see score_da.checkpoint.SHIPPED), refuse weights
made for other channels, grids or normalisation, and draw posterior samples per background
member: an ensemble run cycles N independent samples and gets spread, CRPS and O−A like the
EnKF; a one-member LO-SDA run averages several draws into an estimate of the posterior mean.
"""

from __future__ import annotations

import torch

from cycler_da.analysis import MethodContext, register
from forecast_models.checkpoint import CheckpointError, check_compatible
from score_da import checkpoint
from score_da.latent_var import LatentThreeDVar
from score_da.residual import ResidualAnalysis
from score_da.sampling import DPS, LOSDA


def _check(context: MethodContext, name: str, manifest: dict) -> None:
    """Refuses weights made for other channels, grids or normalisation than the run's."""
    if context.normalisation is None:
        if list(manifest["channels"]) != list(context.channels):
            raise CheckpointError(
                f"{name} was trained on channels {manifest['channels']}, "
                f"but the run has {list(context.channels)}"
            )
    else:
        stats = context.normalisation
        check_compatible(
            manifest,
            context.channels,
            context.latitudes,
            context.longitudes,
            stats.mean,
            stats.std,
            name=name,
        )


def _components(context: MethodContext, vae: str, prior: str):
    from cycler_da.provenance import file_hash
    from score_da.train import load_latent_space, load_prior

    vae_path, prior_path = checkpoint.resolve(vae, "vae"), checkpoint.resolve(prior, "prior")
    space, vae_manifest = load_latent_space(vae_path, context.device)
    denoiser, schedule, prior_manifest = load_prior(prior_path, context.device)
    if prior_manifest["vae_sha256"] != file_hash(vae_path):
        raise CheckpointError(
            f"prior {prior_path} was trained on the latents of another autoencoder than {vae_path}"
        )
    for name, manifest in ((f"vae {vae_path}", vae_manifest), (f"prior {prior_path}", prior_manifest)):
        _check(context, name, manifest)
    return space, denoiser, schedule


def _error_samples(context: MethodContext, what: str) -> torch.Tensor:
    return torch.as_tensor(context.error_samples(what), dtype=torch.float32, device=context.device)


def _residual(
    context: MethodContext, space, enabled: bool, b_scale: float, localization_km: float
) -> ResidualAnalysis | None:
    """The B_r 3D-Var of what the autoencoder cannot represent (residual_analysis), or None."""
    if not enabled:
        return None
    return ResidualAnalysis(
        space,
        _error_samples(context, "residual_analysis"),
        context.latitudes,
        context.longitudes,
        localization_km,
        b_scale,
        device=context.device,
    )


# LO-SDA's posterior draws averaged into the analysis of a one-member run.
DETERMINISTIC_SAMPLES = 4


@register("dps")
def _dps(
    context: MethodContext,
    vae: str = "default",
    prior: str = "default",
    steps: int = 32,
    lead_hours: float = 6.0,
    scale: float = 1.0,
    corrections: int = 0,
    tau: float = 0.5,
    stochastic: bool = True,
    background_residual: float = 0.5,
    samples: int = 1,
    residual_analysis: bool = False,
    residual_b_scale: float = 1.0,
    residual_localization_km: float = 1500.0,
) -> DPS:
    # lead_hours: the background's lead the prior is conditioned on: 6 in a 6-hourly cycle,
    # 48 in the seed protocol. scale: ζ of the DPS step (0 samples the prior alone); 1.0 was the
    # best of 0, 0.5, 1 and 2 in benchmarks/tune_score_da.py (3-day cycles, 5 % columns).
    # background_residual: weight of the background's autoencoder residual kept in the analysis;
    # 0.5 over 30-day cycles: z500 113.0 / 270.4 at 5 % / 1 % columns, against 129.6 / 327.5 at 0.
    space, denoiser, schedule = _components(context, vae, prior)
    residual = _residual(context, space, residual_analysis, residual_b_scale, residual_localization_km)
    return DPS(
        space,
        denoiser,
        schedule,
        steps,
        lead_hours,
        corrections,
        tau,
        stochastic,
        background_residual,
        samples,
        residual,
        scale=scale,
    )


@register("lo-sda")
def _lo_sda(
    context: MethodContext,
    vae: str = "default",
    prior: str = "default",
    steps: int = 32,
    lead_hours: float = 6.0,
    corrections: int = 0,
    tau: float = 0.5,
    stochastic: bool = False,
    optimise_below: float = 0.6,
    inner_steps: int = 5,
    lr: float = 0.05,
    proximal: float = 1.0,
    polish_steps: int = 30,
    polish_proximal: float = 0.1,
    fit_target: float = 0.7,
    optimizer: str = "lbfgs",
    background_residual: float = 0.5,
    samples: int | None = None,
    residual_analysis: bool = True,
    residual_b_scale: float = 1.5,
    residual_localization_km: float = 1500.0,
) -> LOSDA:
    # benchmarks/tune_score_da.py: proximal and optimise_below hardly matter (the late steps, the
    # polish and the χ²/m stop decide the analysis); fit_target 0.7 is a little better at 1.3x
    # the cost (3-day cycles; the default since 2026-12-05, below); Adam is worse than L-BFGS;
    # 16 steps cost half.
    # background_residual w (analysis D(z) + w (x_b − D(z_b))): over 30-day cycles z500 123.5 /
    # 109.6 / 139.3 at w = 0 / 0.5 / 1 (5 % columns) and 398.5 / 297.5 / 289.7 (1 %): at 1 the
    # uncorrected residual's error grows (benchmarks/results-tune_score_da.txt).
    # samples K: the analysis is the mean of K posterior draws per member. None: 4 in a
    # one-member run (10-day cycles at 5 % columns: z500 111.3 / 109.0 / 107.9 at K = 1 / 2 / 4,
    # for 1.1 / 1.8 / 3.8 s per window), 1 in an ensemble, whose members must stay draws.
    # residual_analysis: a B_r 3D-Var of what the autoencoder cannot represent after the latent
    # analysis (score_da/residual.py). 30-day cycles, benchmarks/results-cycle_score_da.txt:
    # z500 / t850 / u250 / v500 / msl 105.1 / 1.142 / 2.769 / 2.529 / 104.8 at 5 % columns against
    # 106.9 / 1.183 / 2.789 / 2.548 / 106.5 without; level at 1 % (283.1 against 282.8); 4.1 s per
    # window against 2.8. With background_residual 1 it drifts at 5 % (z500 122.5).
    # stochastic False (DDIM draws), residual_b_scale 1.5 and fit_target 0.7 since 2026-12-05:
    # 30-day z500 103.4 / 248.3 at 5 % / 1 % columns against 104.9 / 266.5 with True, 1.0, 1.0,
    # all 11 channels lower at both; fit_target 0.5 over-fits at 5 % (106.8). With vae and prior
    # "anomaly" and fit_target 0.5: 95.8 at 5 % (3dvar 96.4) but 283.2 at 1 %
    # (configs/lo_sda_dense.yaml).
    if samples is None:
        samples = DETERMINISTIC_SAMPLES if context.members == 1 else 1
    space, denoiser, schedule = _components(context, vae, prior)
    residual = _residual(context, space, residual_analysis, residual_b_scale, residual_localization_km)
    return LOSDA(
        space,
        denoiser,
        schedule,
        steps,
        lead_hours,
        corrections,
        tau,
        stochastic,
        background_residual,
        samples,
        residual,
        optimise_below=optimise_below,
        inner_steps=inner_steps,
        lr=lr,
        proximal=proximal,
        polish_steps=polish_steps,
        polish_proximal=polish_proximal,
        fit_target=fit_target,
        optimizer=optimizer,
    )


@register("latent-3dvar")
def _latent_3dvar(
    context: MethodContext,
    vae: str = "default",
    b_scale: float = 3.0,
    max_iterations: int = 50,
    tolerance: float = 1e-5,
    background_residual: float = 0.5,
    residual_analysis: bool = False,
    residual_b_scale: float = 1.0,
    residual_localization_km: float = 1500.0,
) -> LatentThreeDVar:
    # L3DVar: the 3D-Var of the autoencoder's latents with a diagonal B_z, the latent image of the
    # training-set 24-h errors behind the 3dvar baseline's B; LO-SDA with a Gaussian prior in
    # place of the diffusion model (same autoencoder, background_residual, H and R). b_scale from
    # benchmarks/tune_score_da.py (10-day cycles, 5 % columns): z500 120.7 / 114.5 / 110.4 at
    # 1 / 1.5 / 3 (χ²/m 1.18 / 0.89 / 0.58): the best RMSE, as the competitor LO-SDA is set against.
    from score_da.train import load_latent_space

    samples = _error_samples(context, "latent-3dvar")
    vae_path = checkpoint.resolve(vae, "vae")
    space, manifest = load_latent_space(vae_path, context.device)
    _check(context, f"vae {vae_path}", manifest)
    residual = _residual(context, space, residual_analysis, residual_b_scale, residual_localization_km)
    return LatentThreeDVar(space, samples, b_scale, max_iterations, tolerance, background_residual, residual)
