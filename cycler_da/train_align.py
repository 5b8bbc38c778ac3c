"""``cycler train align-data`` and ``cycler train align``: Align-DA's preference data and its DPO.

Preference data: backgrounds from the training years, half 48-h forecasts from the truth (the
seed papers' protocol) and half 6-h forecasts from truth + an analysis-like perturbation (the
backgrounds a cycle makes); for each, N stochastic samples of the reference prior without
observations, decoded (with the kept share of the background's autoencoder residual, as the
methods decode), are scored by :mod:`score_da.rewards`: accuracy against the truth, the 48-h
forecast's accuracy against the truth 48 h on (each sample starts the emulator with the
background's own 6-h tendency), Geo-Score and Hydro-Score. The pair sets (multi-reward -M,
physics-only -P), every reward and the paired latents go to one NetCDF file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from pydantic import Field
from tqdm.auto import tqdm

from cycler_da.config import ForecastDataConfig, Strict
from cycler_da.core import MethodContext
from cycler_da.core.balance import Balance
from cycler_da.provenance import interrupted_state, training_provenance
from forecast_models.checkpoint import file_hash
from score_da import checkpoint, rewards
from score_da.alignment import AlignmentTraining, PreferencePairs, align_prior
from score_da.dps import DPS, DPSParams
from score_da.sampling import load_diffusion

PAIR_SETS = ("multi", "physics")


class PreferenceDataConfig(Strict):
    """``cycler train align-data``: what is sampled, scored and paired.

    backgrounds: from the training years, half seed-protocol (48 h from the truth), half cycled
        (6 h from a perturbed truth); valid_backgrounds the same from the validation months.
    samples: prior samples per background (N); steps: reverse steps per sample.
    hydrostatic: the Hydro-Score as a fourth reward of the multi-reward set.
    decile: winners (losers) are the samples in this top (bottom) fraction of every reward.
    physics_pairs: the -P set pairs this many best with as many worst Geo-Scores.
    """

    data: ForecastDataConfig = ForecastDataConfig()
    vae: str = "default"
    prior: str = "default"
    forecast_checkpoint: str = "default"
    backgrounds: int = Field(default=448, ge=2)
    valid_backgrounds: int = Field(default=32, ge=2)
    samples: int = Field(default=32, ge=4)
    steps: int = Field(default=32, ge=1)
    forecast_hours: int = Field(default=48, ge=6, multiple_of=6)
    background_residual: float = Field(default=0.5, ge=0, le=1)
    hydrostatic: bool = False
    decile: float = Field(default=0.1, gt=0, le=0.5)
    physics_pairs: int = Field(default=5, ge=1)
    perturbation_scale: float = 1.0
    seed: int = 0


class AlignmentConfig(Strict):
    """``cycler train align``: the pair file, which set, the reference prior, and the DPO optimisation."""

    pairs: str = "pairs.nc"
    prior: str = "default"
    pair_set: str = Field(default="multi", pattern="^(multi|physics)$")
    training: AlignmentTraining = AlignmentTraining()


def _starts(count: int, first: int, last: int, offset: int) -> list[int]:
    """`count` analysis indices spread evenly over [first + offset, last]."""
    return [int(i) for i in np.linspace(first + offset, last, count).round()]


class _Scorer:
    """Everything one background's samples need: models, truth, geometry."""

    def __init__(self, config: PreferenceDataConfig, device: str, progress: bool):
        from cycler_da.forecast import load_series
        from cycler_da.perturbations import analysis_like_sampler
        from forecast_models.checkpoint import check_compatible, load_checkpoint, resolve_checkpoint

        train, valid, self.stats, grid = load_series(config.data, progress)
        self.series = {
            "train": self.stats.normalise(train).to(device),
            "valid": self.stats.normalise(valid).to(device),
        }
        self.vae_path = checkpoint.resolve(config.vae, "vae")
        self.prior_path = checkpoint.resolve(config.prior, "prior")
        labels = list(config.data.channels)
        context = MethodContext(
            channels=tuple(labels),
            latitudes=grid.latitudes,
            longitudes=grid.longitudes,
            device=device,
            normalisation=self.stats,
        )
        self.space, denoiser, schedule = load_diffusion(context, config.vae, config.prior)
        self.fc_path = resolve_checkpoint(config.forecast_checkpoint)
        self.emulator, fc_manifest = load_checkpoint(self.fc_path, device)
        check_compatible(
            fc_manifest,
            labels,
            grid.latitudes,
            grid.longitudes,
            self.stats.mean,
            self.stats.std,
            name="forecast",
        )
        self.weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32, device=device)
        self.balance = Balance(labels, grid.latitudes)
        self.perturb = analysis_like_sampler(
            config.data, self.stats, grid, self.emulator, self.fc_path, config.perturbation_scale
        )
        self.samplers = {
            lead: DPS(
                self.space,
                denoiser,
                schedule,
                DPSParams(
                    scale=0.0,
                    steps=config.steps,
                    lead_hours=lead,
                    background_residual=config.background_residual,
                ),
            )
            for lead in (6.0, 48.0)
        }
        self.config = config

    def background(self, split: str, index: int, lead: int, generator: torch.Generator):
        """(background, its state 6 h before) at `index`: a `lead`-hour forecast, perturbed start if 6 h."""
        from forecast_models.training import correlated_perturbation

        series, steps = self.series[split], lead // 6
        state, previous = series[index - steps : index - steps + 1], series[index - steps - 1 : index - steps]
        if lead == 6:
            p = self.perturb(1, generator).to(state)
            state, previous = (
                state + p,
                previous + correlated_perturbation(p, self.perturb(1, generator).to(state)),
            )
        for _ in range(steps):
            previous, state = state, self.emulator.step(state, previous)
        return state, previous

    @torch.no_grad()
    def score(self, split: str, index: int, lead: int, generator: torch.Generator) -> dict:
        """One background's samples, rewards and pairs."""
        c = self.config
        x_b, x_prev = self.background(split, index, lead, generator)
        sampler = self.samplers[float(lead)]
        z_b, draw = sampler.begin(x_b.repeat(c.samples, 1, 1, 1))
        z = sampler.sample_latent(z_b, None, draw, generator)  # scale 0: observations never read
        x = sampler.decode(z, draw)
        truth = self.series[split]
        forecast = self.emulator.rollout(x, c.forecast_hours // 6, x_prev + (x - x_b))[-1]
        later = truth[index + c.forecast_hours // 6]
        physical = self.stats.denormalise(x)
        balance = rewards.balance_rewards(
            self.balance, physical, self.stats.denormalise(truth[index : index + 1])
        )
        scores = torch.stack(
            [
                rewards.bradley_terry(rewards.area_rmse(x, truth[index], self.weights)),
                rewards.bradley_terry(rewards.area_rmse(forecast, later, self.weights)),
                balance["geostrophic"],
                balance["hydrostatic"],
            ],
            dim=1,
        )
        used = 4 if c.hydrostatic else 3
        return {
            "latents": z.cpu(),
            "background": z_b[0].cpu(),
            "rewards": scores.cpu(),
            "multi": rewards.select_pairs(scores[:, :used], c.decile),
            "physics": rewards.physics_pairs(scores[:, 2], c.physics_pairs),
        }


def make_preference_data(
    config: PreferenceDataConfig,
    out: Path,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Samples, scores and pairs; writes `out` (NetCDF); returns its summary. Resumable per background."""
    partial = interrupted_state(out, resume, ".partial")
    scorer = _Scorer(config, device, progress)
    steps_f = config.forecast_hours // 6
    plan = []
    for split, count in (("train", config.backgrounds), ("valid", config.valid_backgrounds)):
        last = scorer.series[split].shape[0] - 1 - steps_f
        half = count // 2
        plan += [(split, i, 48) for i in _starts(count - half, 9, last, 0)]
        plan += [(split, i, 6) for i in _starts(half, 9, last, 2)]
    done = torch.load(partial, weights_only=False) if partial.exists() else {"config": None, "rows": []}
    if done["config"] not in (None, config.model_dump(mode="json")):
        raise ValueError(f"{partial} was made with other settings; delete it to start afresh")
    rows, began = done["rows"], time.perf_counter()
    for b in tqdm(
        range(len(rows), len(plan)),
        initial=len(rows),
        total=len(plan),
        desc="preference data",
        disable=not progress,
    ):
        split, index, lead = plan[b]
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + b)
        rows.append(
            {"split": split, "index": index, "lead": lead, **scorer.score(split, index, lead, generator)}
        )
        if (b + 1) % 16 == 0:
            torch.save({"config": config.model_dump(mode="json"), "rows": rows}, partial)
    summary = _write_pairs(out, rows, scorer, config, time.perf_counter() - began, command, device)
    partial.unlink(missing_ok=True)
    return summary


def _write_pairs(
    out: Path, rows: list[dict], scorer: _Scorer, config, seconds: float, command: str, device: str
) -> dict:
    """The pair file: every reward, the paired samples' latents, and both pair sets (deduplicated)."""
    kept, keep_index, pair_sets = [], {}, {name: [] for name in PAIR_SETS}
    seen = set()
    for b, row in enumerate(rows):
        for name in PAIR_SETS:
            for w, lo in row[name]:
                key = hashlib.sha1(
                    row["latents"][w].numpy().tobytes() + row["latents"][lo].numpy().tobytes()
                ).hexdigest()
                if (name, key) in seen:
                    continue
                seen.add((name, key))
                for s in (w, lo):
                    if (b, s) not in keep_index:
                        keep_index[(b, s)] = len(kept)
                        kept.append((b, s))
                pair_sets[name].append((keep_index[(b, w)], keep_index[(b, lo)]))
    latent = torch.stack([rows[b]["latents"][s] for b, s in kept]).numpy()
    ds = xr.Dataset(
        {
            "rewards": (
                ("background", "sample", "reward"),
                torch.stack([r["rewards"] for r in rows]).numpy(),
            ),
            "background_latent": (
                ("background", "latent", "y", "x"),
                torch.stack([r["background"] for r in rows]).numpy(),
            ),
            "lead_hours": ("background", np.array([r["lead"] for r in rows], dtype=np.float32)),
            "split": ("background", np.array([r["split"] for r in rows])),
            "truth_index": ("background", np.array([r["index"] for r in rows], dtype=np.int32)),
            "kept_latent": (("kept", "latent", "y", "x"), latent),
            "kept_background": ("kept", np.array([b for b, _ in kept], dtype=np.int32)),
            "kept_sample": ("kept", np.array([s for _, s in kept], dtype=np.int32)),
            **{
                f"pairs_{name}": ((f"pair_{name}", "side"), np.array(pairs, dtype=np.int32).reshape(-1, 2))
                for name, pairs in pair_sets.items()
            },
        },
        coords={"reward": list(rewards.REWARDS), "side": ["winner", "loser"]},
        attrs={
            "title": "Align-DA preference data",
            "reference_prior_sha256": file_hash(scorer.prior_path),
            "vae_sha256": file_hash(scorer.vae_path),
            "forecast_checkpoint_sha256": file_hash(scorer.fc_path),
            "multi_rewards": ",".join(rewards.REWARDS[: 4 if config.hydrostatic else 3]),
            "config": json.dumps(config.model_dump(mode="json")),
            "provenance": json.dumps(training_provenance(command, device, seconds)),
        },
    )
    from cycler_da.io import write_dataset

    write_dataset(ds, out, overwrite=True)
    return {"backgrounds": len(rows), **{name: len(p) for name, p in pair_sets.items()}, "seconds": seconds}


def _pair_set(ds: xr.Dataset, name: str, split: str, device: str) -> PreferencePairs:
    pairs = ds[f"pairs_{name}"].values
    background = ds["kept_background"].values[pairs[:, 0]]
    chosen = ds["split"].values[background] == split
    pairs, background = pairs[chosen], background[chosen]
    latent = torch.as_tensor(ds["kept_latent"].values, device=device)
    return PreferencePairs(
        latent[pairs[:, 0]],
        latent[pairs[:, 1]],
        torch.as_tensor(ds["background_latent"].values[background], device=device),
        torch.as_tensor(ds["lead_hours"].values[background], device=device),
    )


def train_alignment(
    config: AlignmentConfig,
    out: Path,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Fine-tunes the reference prior on one pair set of `config.pairs`; writes `out`; returns its manifest."""
    state_path = interrupted_state(out, resume)
    pairs_path = Path(config.pairs)
    if not pairs_path.exists():
        raise FileNotFoundError(f"pairs {pairs_path} not found: make it with cycler train align-data")
    prior_path = checkpoint.resolve(config.prior, "prior")
    with xr.open_dataset(pairs_path) as opened:
        ds = opened.load()
    if ds.attrs["reference_prior_sha256"] != file_hash(prior_path):
        raise ValueError(f"pairs {pairs_path} were sampled from another prior than {prior_path}")
    train, valid = (_pair_set(ds, config.pair_set, split, device) for split in ("train", "valid"))
    if len(train) == 0 or len(valid) == 0:
        raise ValueError(f"pairs {pairs_path} hold no {config.pair_set!r} pairs for training or validation")
    reference, schedule, manifest = checkpoint.load_prior(prior_path, device)
    model = copy.deepcopy(reference)
    history = align_prior(model, reference, schedule, train, valid, config.training, state_path, progress)
    rewards_used = ds.attrs["multi_rewards"] if config.pair_set == "multi" else "geostrophic"
    manifest = {
        **manifest,
        "alignment": {
            "reference_prior_sha256": file_hash(prior_path),
            "pair_file": str(pairs_path),
            "pair_file_sha256": file_hash(pairs_path),
            "pair_set": config.pair_set,
            "rewards": rewards_used.split(","),
            "pairs": {"train": len(train), "valid": len(valid)},
            "config": config.model_dump(mode="json"),
            "history": history.records,
            **training_provenance(command, device, history.wall_seconds),
        },
    }
    checkpoint.save(out, model.cpu(), manifest)
    state_path.unlink(missing_ok=True)
    return manifest
