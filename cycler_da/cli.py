"""The ``cycler`` command line. Parsing only: work is delegated, torch imported lazily."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from cycler_da import __version__

app = typer.Typer(
    help="cycler: cycle score-based and classical data assimilation behind one driver.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)
data_app = typer.Typer(
    help="Make and inspect datasets: the embedded nature run, real reanalysis files.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


# Accepted spellings of dates and times on the command line (UTC).
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y%m%dT%H"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cycler {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """cycler: an operational-style cycling data-assimilation system for research."""


def set_threads(threads: int | None) -> int:
    """Sets torch's intra-op threads deliberately (oversubscription is ~16x slower)."""
    import torch

    if threads is None:
        threads = int(os.environ.get("CYCLER_THREADS", 0)) or len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@data_app.command("nature")
def data_nature(
    start: Annotated[
        datetime,
        typer.Option(formats=DATE_FORMATS, help="First valid time, e.g. 2018-01-01 or 2018-01-01T06."),
    ],
    end: Annotated[datetime, typer.Option(formats=DATE_FORMATS, help="Last valid time, inclusive.")],
    resolution: Annotated[str, typer.Option(help="T21 (32x64 Gaussian) or T42 (64x128).")] = "T21",
    seed: Annotated[int, typer.Option(help="0 = the canonical trajectory; others branch off it.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Also write the segment to this .nc or .zarr path.")
    ] = None,
    compiled: Annotated[
        bool, typer.Option("--compiled/--eager", help="torch.compile the dynamical core.")
    ] = True,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Generate the Held–Suarez nature run (the embedded truth) for [START, END].

    Every month is integrated once and cached in the data directory ($CYCLER_DATA_DIR,
    default ~/.cache/cycler): asking again costs nothing. The default calendar puts the
    training years in 2016–2017 and the test period in 2018; spun-up states for every
    month ship with the package, so a segment in 2018 starts in seconds.

    Example: cycler data nature --start 2018-01-01 --end 2018-01-31 --out jan2018.nc
    """
    from cycler_da import nature
    from cycler_da.io import output_format, write_dataset

    if out is not None:
        try:
            output_format(out)
        except ValueError as err:
            _fail(str(err))
        if out.exists() and not overwrite:
            _fail(f"{out} exists; pass --overwrite or choose another --out")
    n = set_threads(threads)
    try:
        spec = nature.NatureSpec(resolution=resolution, seed=seed, compiled=compiled)
        began = time.perf_counter()
        ds = nature.open_nature(start, end, spec)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    elapsed = time.perf_counter() - began
    typer.echo(
        f"nature run {spec.key}: {ds.sizes['time']} times from {start:%Y-%m-%d %H}Z to "
        f"{end:%Y-%m-%d %H}Z, ready in {elapsed:.1f} s on {n} thread(s)\n"
        f"  cache: {spec.cache_dir}"
    )
    if out is not None:
        write_dataset(ds, out, overwrite=overwrite)
        typer.echo(f"  wrote {out}")


@data_app.command("info")
def data_info(
    path: Annotated[Path, typer.Argument(help="GRIB file, NetCDF file or zarr store.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a summary.")] = False,
) -> None:
    """Describe a dataset: variables, levels, grid, time span and detected conventions.

    Reads ERA5 GRIB (cfgrib), ERA5 NetCDF (old and new CDS names), WeatherBench 2 zarr
    and the nature run, renamed to WB2/ERA5 conventions.
    """
    from cycler_da.sources import DataError, describe, open_dataset

    try:
        info = describe(open_dataset(path))
    except (DataError, FileNotFoundError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    grid = info["grid"]
    lines = [
        f"{info['path']}  [{info['format']}; {info['conventions']}]",
        f"  grid:      {grid['type']} {grid['latitude'][2]}x{grid['longitude'][2]}  "
        f"lat {grid['latitude'][0]:.2f}..{grid['latitude'][1]:.2f}  "
        f"lon {grid['longitude'][0]:.2f}..{grid['longitude'][1]:.2f}",
        f"  levels:    {info['levels_hpa'] or '-'} hPa",
    ]
    if "time" in info:
        t = info["time"]
        lines.append(
            f"  time:      {t['start']} .. {t['end']}  ({t['count']} times, step {t['step_hours']} h)"
        )
    if info["members"]:
        lines.append(f"  members:   {info['members']}")
    lines.append("  variables:")
    for name, var in info["variables"].items():
        lines.append(f"    {name:<26} {var['units']:<12} {tuple(var['dims'])}")
    typer.echo("\n".join(lines))


@data_app.command("stats")
def data_stats(
    config: Annotated[
        Path | None, typer.Option(help="A run YAML: its truth, channels and forecast model [the defaults].")
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option(
            help="Remake every product from the training period and compare it with the stored one."
        ),
    ] = False,
    write: Annotated[
        bool, typer.Option(help="With --rebuild: store the remade products in the package.")
    ] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores).")] = None,
) -> None:
    """The training-period statistics a run uses, and where each one comes from.

    Normalisation, B (24-h forecast errors of the emulator from the truth) and its error
    samples, and the period's mean state. Each is named by the hash of what made it: the
    truth (for the nature run, a hash of its model configuration), the channels, the period
    and the forecast model's sha256. Those of the default setup ship with the package, so a
    first run integrates only the months it covers. --rebuild integrates the training period
    (about 8 minutes on 2 cores the first time) and shows that the shipped products are
    exactly what it makes.

    Example: cycler data stats --rebuild
    """
    from cycler_da.config import ConfigError, load_config
    from cycler_da.run_config import RunConfig
    from cycler_da.run_setup import training_errors
    from cycler_da.statistics_cache import SHIPPED, products, remake, same

    set_threads(threads)
    try:
        errors = training_errors(load_config(config, RunConfig))
    except (ConfigError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    found = products(errors)
    if not rebuild:
        for name, path in found.items():
            where = (
                "missing: made on first use"
                if path is None
                else ("shipped" if path.parent == SHIPPED else path)
            )
            typer.echo(f"{name:44} {where}")
        return
    made = remake(errors)
    differ = []
    for name, value in made.items():
        path = found[name]
        verdict = (
            "no stored copy" if path is None else ("identical" if same(name, value, path) else "DIFFERENT")
        )
        differ += [name] if verdict == "DIFFERENT" else []
        typer.echo(f"{name:44} {verdict}")
    if write:
        import numpy as np

        SHIPPED.mkdir(parents=True, exist_ok=True)
        for name, value in made.items():
            if name.endswith(".npy"):
                np.savez_compressed(SHIPPED / name.replace(".npy", ".npz"), errors=value)
            else:
                (SHIPPED / name).write_text(json.dumps(value))
        typer.echo(f"stored in {SHIPPED}")
    elif differ:
        _fail(f"{len(differ)} product(s) differ from the stored ones: {', '.join(differ)}")


train_app = typer.Typer(
    help="Train the project's neural networks. forecast, vae and prior also run data-parallel: "
    "torchrun --nproc-per-node N -m cycler_da train prior ... (the same steps as one process, "
    "each rank computing 1/N of every batch).",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")


@train_app.command("forecast")
def train_forecast(
    config: Annotated[
        Path | None, typer.Option(help="YAML with data/model/training sections (defaults otherwise).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    epochs: Annotated[int | None, typer.Option(help="Override training.epochs.")] = None,
    out: Annotated[Path, typer.Option(help="Checkpoint to write.")] = Path("forecast.pt"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last epoch.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Train the 6-hour forecast emulator on the nature run's training years.

    Trains on 2016-01-01..2017-10-31 and validates on 2017-11..12 by default (2018 stays
    untouched for testing), then writes OUT: the weights plus a manifest with the
    architecture, channels, grid, normalisation, validation scores and this command.
    The resolved config is printed first. An interrupted run continues with --resume.

    Example: cycler train forecast --epochs 12 --out forecast.pt
    """
    manifest = _train("forecast", config, device, epochs, out, resume, threads, overwrite)
    scores = manifest["validation"]
    typer.echo(
        f"wrote {out} ({manifest['parameters']:,} parameters, "
        f"{manifest['training']['wall_seconds']:.0f} s training)"
    )
    typer.echo(f"{'channel':8} {'6-h RMSE':>10} {'persistence':>12} {'ratio':>6}")
    for ch, rmse in scores["rmse_6h"].items():
        pers = scores["persistence_rmse_6h"][ch]
        typer.echo(f"{ch:8} {rmse:10.4g} {pers:12.4g} {rmse / pers:6.2f}")


def _train(kind: str, config, device, steps_override, out, resume, threads, overwrite, **options) -> dict:
    """Shared body of ``cycler train ...``: config, checks, provenance, errors.

    `options` are further config keys the command line overrides (None: not given)."""
    from cycler_da import train_align
    from cycler_da import train_score as score_train
    from cycler_da.config import ConfigError, ForecastTrainingConfig, dump_config, load_config
    from cycler_da.forecast import train_forecast as forecast_training

    model, run_training, key, flag = {
        "forecast": (ForecastTrainingConfig, forecast_training, "training.epochs", "--epochs"),
        "vae": (score_train.VaeTrainingConfig, score_train.train_vae, "training.epochs", "--epochs"),
        "prior": (
            score_train.PriorTrainingConfig,
            score_train.train_prior_model,
            "training.steps",
            "--steps",
        ),
        "align-data": (
            train_align.PreferenceDataConfig,
            train_align.make_preference_data,
            "backgrounds",
            "--backgrounds",
        ),
        "align": (train_align.AlignmentConfig, train_align.train_alignment, "training.steps", "--steps"),
    }[kind]
    overrides = {k: v for k, v in {key: steps_override, **options}.items() if v is not None}
    try:
        cfg = load_config(config, model, overrides)
    except ConfigError as err:
        _fail(str(err))
    if out.exists() and not (overwrite or resume):
        _fail(f"{out} exists; pass --overwrite or choose another --out")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail("--device cuda asked for, but torch sees no CUDA device")
    n = set_threads(threads)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if rank == 0:
        ranks = f", {world} ranks" if world > 1 else ""
        typer.echo(f"# resolved config ({n} thread(s){ranks}, device {device})\n{dump_config(cfg)}")
    given = {"--config": config, "--device": device, flag: steps_override, "--out": out, "--threads": threads}
    given |= {f"--{k}": v for k, v in options.items()}
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    nodes = f"--nnodes {world // local} " if world > local else ""
    launcher = f"torchrun {nodes}--nproc-per-node {local} -m cycler_da" if world > 1 else "cycler"
    command = " ".join([f"{launcher} train {kind}", *(f"{k} {v}" for k, v in given.items() if v is not None)])
    try:
        return run_training(cfg, out, device, resume, command=command + (" --resume" if resume else ""))
    except (ValueError, FileExistsError, FileNotFoundError, ImportError) as err:
        _fail(str(err))


_CONFIG_OPTION = typer.Option(help="YAML with data/model/training sections (defaults otherwise).")


@train_app.command("vae")
def train_vae(
    config: Annotated[Path | None, _CONFIG_OPTION] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    epochs: Annotated[int | None, typer.Option(help="Override training.epochs.")] = None,
    out: Annotated[Path, typer.Option(help="Checkpoint to write.")] = Path("vae.pt"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last epoch.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Train the autoencoder of the score-based methods (state 32x64 -> latent 16x32).

    Trains on the nature run's training years (validates on 2017-11..12), fits the latent
    standardisation, and writes OUT with a manifest holding the per-channel reconstruction
    RMSE, which bounds the analysis error any latent method can reach.

    Example: cycler train vae --epochs 30 --out vae.pt
    """
    manifest = _train("vae", config, device, epochs, out, resume, threads, overwrite)
    typer.echo(
        f"wrote {out} ({manifest['parameters']:,} parameters, "
        f"{manifest['training']['wall_seconds']:.0f} s training)"
    )
    typer.echo(f"{'channel':8} {'reconstruction RMSE':>20} {'normalised':>11}")
    v = manifest["validation"]
    for ch, rmse in v["reconstruction_rmse"].items():
        typer.echo(f"{ch:8} {rmse:20.4g} {v['reconstruction_rmse_normalised'][ch]:11.4f}")


@train_app.command("prior")
def train_prior(
    config: Annotated[Path | None, _CONFIG_OPTION] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    steps: Annotated[int | None, typer.Option(help="Override training.steps.")] = None,
    out: Annotated[Path, typer.Option(help="Checkpoint to write.")] = Path("prior.pt"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last save.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    space: Annotated[
        str | None,
        typer.Option(
            help="latent (the autoencoder's, default) or state (the grid itself); overrides the config."
        ),
    ] = None,
) -> None:
    """Train the background-conditioned diffusion prior p(z | z_b, lead).

    Pairs: the forecast model's 6/12/24/48-h forecasts over the training years, started from
    the truth and from truth + analysis-like perturbations, encoded with the autoencoder
    (config key vae, default the shipped one) or, with --space state, left on the grid as
    normalised states (no autoencoder, so no reconstruction floor; 4x the pixels). The pairs
    are made once per setting and kept in the data directory (pairs/), so a fine-tune or an
    ablation on the same pairs starts at once. VP cosine schedule, epsilon-prediction; the EMA
    weights are written to OUT. dps, lo-sda and align-da take either kind by path
    (prior: PATH).

    Example: cycler train prior --steps 20000 --out prior.pt
             cycler train prior --config configs/prior_t21_state.yaml --out prior-state.pt
    """
    manifest = _train("prior", config, device, steps, out, resume, threads, overwrite, space=space)
    typer.echo(
        f"wrote {out} ({manifest['parameters']:,} parameters, {manifest['pairs']['train']:,} pairs, "
        f"{manifest['training']['wall_seconds']:.0f} s training); "
        f"validation eps-loss {manifest['validation']['eps_loss_ema']:.4f}"
    )


@train_app.command("align-data")
def train_align_data(
    config: Annotated[
        Path | None, typer.Option(help="YAML of the preference data (defaults otherwise).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    backgrounds: Annotated[int | None, typer.Option(help="Override backgrounds.")] = None,
    out: Annotated[Path, typer.Option(help="Pair file to write (NetCDF).")] = Path("pairs.nc"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last save.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Make Align-DA's preference data: prior samples scored by three rewards, and their pairs.

    For each background of the training years (half 48-h forecasts from the truth, half 6-h
    forecasts from a perturbed truth) N samples of the reference prior are drawn without
    observations and scored: accuracy and 48-h forecast accuracy against the truth
    (pairwise Bradley-Terry over channels), Geo-Score and Hydro-Score (balance as the
    truth's). OUT holds every reward, the multi-reward pairs (-M: top against bottom
    decile of every reward) and the physics-only pairs (-P), with the paired latents.

    Example: cycler train align-data --backgrounds 448 --out pairs.nc
    """
    summary = _train("align-data", config, device, backgrounds, out, resume, threads, overwrite)
    typer.echo(
        f"wrote {out}: {summary['backgrounds']} backgrounds, {summary['multi']} multi-reward and "
        f"{summary['physics']} physics-only pairs ({summary['seconds']:.0f} s)"
    )


@train_app.command("align")
def train_align(
    config: Annotated[
        Path | None, typer.Option(help="YAML with pairs/pair_set/prior/training (defaults otherwise).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    steps: Annotated[int | None, typer.Option(help="Override training.steps.")] = None,
    out: Annotated[Path, typer.Option(help="Checkpoint to write.")] = Path("prior-aligned.pt"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last save.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Align the diffusion prior with preference pairs by Diffusion-DPO (Align-DA).

    Fine-tunes a copy of the reference prior against the frozen original on one pair set of
    the pair file (pair_set: multi or physics), logging the implicit preference accuracy and
    the epsilon-loss drift from the reference. OUT's manifest names the reference prior and
    the pair file by hash.

    Example: cycler train align --config configs/align_t21.yaml --out prior-aligned.pt
    """
    manifest = _train("align", config, device, steps, out, resume, threads, overwrite)
    last = manifest["alignment"]["history"][-1]
    typer.echo(
        f"wrote {out} ({manifest['alignment']['pairs']['train']:,} pairs, "
        f"{manifest['alignment']['wall_seconds']:.0f} s); held-out implicit accuracy "
        f"{last['valid_accuracy']:.2f}, epsilon-loss drift {last['valid_drift']:+.2e}"
    )


@app.command("methods")
def methods(
    name: Annotated[str | None, typer.Argument(help="A method: list its parameters.")] = None,
) -> None:
    """List the analysis methods, or one method's parameters with their defaults.

    Built-in and installed methods alike (entry points of ``cycler.analysis_methods``); set
    parameters under ``method.params`` in a run's YAML.
    """
    from cycler_da.core.registry import MethodError, known_methods, method_spec

    if name is None:
        for known in known_methods():
            spec = method_spec(known)
            members = f"{spec.members} members" if spec.members > 1 else "deterministic"
            typer.echo(f"{known:14} {members:14} {spec.summary}")
        return
    try:
        spec = method_spec(name)
    except MethodError as err:
        _fail(str(err))
    typer.echo(f"{name}: {spec.summary}")
    for parameter, default, doc in spec.describe():
        typer.echo(f"  {parameter:26} {default!s:12} {doc}")


@app.command("run")
def run(
    config: Annotated[
        Path | None, typer.Option(help="Experiment YAML (see configs/); options below override it.")
    ] = None,
    start: Annotated[
        datetime | None, typer.Option(formats=DATE_FORMATS, help="Initial analysis time t0 [2018-01-01].")
    ] = None,
    days: Annotated[float | None, typer.Option(help="Length in days: 4 windows a day [30].")] = None,
    method: Annotated[
        str | None, typer.Option(help="Analysis method [3dvar]; `cycler methods` lists them.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Run name [METHOD-START].")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Where runs go [./runs].")] = None,
    members: Annotated[int | None, typer.Option(help="Ensemble members [1; enkf: 40].")] = None,
    protocol: Annotated[
        str | None, typer.Option(help="cycle, or seed: backgrounds are 48-h forecasts from the truth.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run from its last complete window.")
    ] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores).")] = None,
) -> None:
    """Cycle a data-assimilation experiment and write every window to NetCDF.

    Every 6 hours the forecast model makes the background from the previous analysis,
    observations are simulated from the truth and quality-controlled, and the analysis
    method combines them. The run directory gets config.yaml (every default written out),
    run.json, background/, analysis/, observations/, forecasts/ (from 00 UTC analyses
    to 120 h), scores.nc and forecast_scores.nc. The nature run is integrated for the
    months the run covers, once (cached); the training-period statistics of the default
    truth and forecast model ship with the package. A diverged analysis stops the run
    unless guard.on_divergence says otherwise; `cycler methods` lists the methods.

    Example: cycler run --start 2018-01-01 --days 30 --method 3dvar
    """
    from cycler_da.config import ConfigError, load_config
    from cycler_da.driver import RunError, resolve, run_cycle
    from cycler_da.run_config import RunConfig

    overrides = {
        key: value
        for key, value in {
            "run.start": start.isoformat() if start else None,
            "run.days": days,
            "run.name": name,
            "run.runs_dir": str(runs_dir) if runs_dir else None,
            "run.protocol": protocol,
            "run.device": device,
            "method.name": method,
            "ensemble.members": members,
        }.items()
        if value is not None
    }
    try:
        cfg = load_config(config, RunConfig, overrides)
    except ConfigError as err:
        _fail(str(err))
    set_threads(threads)
    began = time.perf_counter()
    try:
        cfg = resolve(cfg)
        run_dir = Path(cfg.run.runs_dir) / str(cfg.run.name)
        windows = round(cfg.run.days * 4)
        typer.echo(
            f"{'resuming' if resume else 'starting'} {run_dir}: {cfg.method.name}, "
            f"{cfg.ensemble.members} member(s), {windows} windows from {cfg.run.start:%Y-%m-%d %H} UTC"
        )
        run_cycle(cfg, resume=resume)
    except (ConfigError, RunError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(_run_summary(run_dir, time.perf_counter() - began))


@app.command("sweep")
def sweep(
    sweep_file: Annotated[
        Path, typer.Argument(metavar="SWEEP.yaml", help="The sweep: base config and axes.")
    ],
    scheduler: Annotated[
        str | None, typer.Option(help="A running Dask scheduler (tcp://host:8786); default: a LocalCluster.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="LocalCluster workers [cores // the sweep's threads].")
    ] = None,
    dashboard: Annotated[str, typer.Option(help="LocalCluster dashboard address.")] = ":8787",
    dry_run: Annotated[
        bool, typer.Option(help="List the runs and what is left of each; run nothing.")
    ] = False,
) -> None:
    """Run every combination of a sweep's axes as tasks on a Dask cluster.

    The sweep file names a base run config and the config keys to vary; each combination is a
    run named after its values under runs_dir/NAME/. Runs already complete are skipped; an
    unfinished one resumes from its last complete window, also when its worker dies, so running
    the same sweep again after a crash finishes it with results identical to an uninterrupted
    sweep. Workers are single tasks of `threads` torch threads each (sweep file, default 1).

    Example (SWEEP.yaml):

        name: density
        base: 3dvar.yaml
        axes:
          method.name: [3dvar, enkf]
          observations.networks[0].fraction: [0.01, 0.05]

    cycler sweep SWEEP.yaml; then cycler verify runs/density/* (runs of one start together)
    """
    from cycler_da.config import ConfigError
    from cycler_da.sweep import cluster, expand, load_sweep, progress_of, run_sweep, windows_of

    try:
        spec = load_sweep(sweep_file)
        runs = expand(spec)
    except (ConfigError, ValueError) as err:
        _fail(str(err))
    states = {run.name: progress_of(run) for run in runs}
    left = [run for run in runs if not states[run.name][1]]
    typer.echo(
        f"sweep {spec.name}: {len(runs)} runs in {spec.runs_dir / spec.name}, {len(runs) - len(left)} complete, "
        f"{len(left)} to run ({spec.threads} torch thread(s) each)"
    )
    if dry_run:
        for run in runs:
            done, complete = states[run.name]
            typer.echo(f"  {run.name:40} {'complete' if complete else f'{done}/{windows_of(run)} windows'}")
        return
    if not left:
        return
    with cluster(scheduler, workers, spec.threads, dashboard) as client:
        typer.echo(f"dashboard: {client.dashboard_link}")
        failed = run_sweep(client, runs, spec.threads)
    for name, error in failed.items():
        typer.secho(f"error: run {name}: {error}", fg=typer.colors.RED, err=True)
    if failed:
        raise typer.Exit(code=1)
    typer.echo(f"sweep {spec.name}: all {len(runs)} runs complete in {spec.runs_dir / spec.name}")


def _run_summary(run_dir: Path, seconds: float) -> str:
    """One line: windows, analysis RMSE of z500 and t850 against the truth, wall time, flagged windows."""
    import numpy as np
    import xarray as xr

    with xr.open_dataset(run_dir / "scores.nc") as scores:
        rmse = np.sqrt((scores["analysis_rmse"] ** 2).mean("time"))
        shown = [c for c in ("z500", "t850") if c in scores["channel"].values]
        fit = ", ".join(f"{c} {float(rmse.sel(channel=c)):.4g}" for c in shown)
        flagged = int(scores["flagged"].sum()) if "flagged" in scores else 0
        windows = scores.sizes["time"]
    return (
        f"done: {run_dir}, {windows} windows in {seconds / 60:.1f} min; analysis RMSE against the truth "
        f"{fit}; {flagged} window(s) flagged by the divergence guard"
    )


@app.command("verify")
def verify(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run directories, the first the reference; or one sweep directory."),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one machine-readable JSON summary instead of tables.")
    ] = False,
    plots: Annotated[
        Path | None, typer.Option(help="Write PNG figures and verify.nc (all scores) to this directory.")
    ] = None,
    common: Annotated[
        bool, typer.Option(help="Compare runs on their common windows instead of refusing different periods.")
    ] = False,
    fields: Annotated[
        bool,
        typer.Option(help="Read analysis/background files for balance, increment spectra and maps."),
    ] = True,
) -> None:
    """Compare runs side by side: tables, a scorecard against the first run, plots, JSON.

    Analysis and background RMSE per channel (sqrt of the time-mean area-weighted MSE, as
    WeatherBench 2), forecast RMSE per lead, EnKF spread-skill, geostrophic and hydrostatic
    imbalance of analyses and increments, and a scorecard: % RMSE change of each run against
    the first, with p-values of a paired t-test whose sample size is deflated for the
    autocorrelation of consecutive windows (* p < 0.05). Runs on other grids or truths are
    refused; runs over other periods too, unless --common.

    Given one sweep directory (cycler sweep), runs that differ only in start date or seed are
    pooled into one setting each: RMSEs over all their windows, and a scorecard against the
    first setting whose p-values pool the starts (each start's windows deflated for
    autocorrelation), with the number of starts at which each change has the same sign.

    Example: cycler verify runs/3dvar-20180101T00 runs/enkf-20180101T00 --plots figs/
             cycler verify runs/density --plots figs/
    """
    import numpy as np

    from cycler_da import verify as v
    from cycler_da.verify_sweep import is_sweep

    if len(runs) == 1 and is_sweep(runs[0]):
        _verify_sweep(runs[0], json_out, plots)
        return
    try:
        loaded = v.align([v.load_run(r) for r in runs], common=common)
    except (v.VerifyError, OSError) as err:
        _fail(str(err))
    diagnostics = [v.field_diagnostics(r) for r in loaded] if fields or plots else None
    if diagnostics:
        for run, diag in zip(loaded, diagnostics, strict=True):
            run.extra["balance"] = {k: round(float(np.mean(x)), 6) for k, x in diag["balance"].items()}
    summaries = [v.summary(r) for r in loaded]
    card = v.scorecard(loaded)
    if plots is not None:
        from cycler_da import verify_plots as vp
        from cycler_da.io import write_dataset

        plots.mkdir(parents=True, exist_ok=True)
        written = [
            vp.error_vs_window(loaded, plots),
            vp.error_vs_lead(loaded, plots),
            vp.maps(loaded, diagnostics, plots),
            vp.increment_spectra(loaded, diagnostics, plots),
            vp.rank_histograms(loaded, diagnostics, plots),
        ]
        write_dataset(v.scores_dataset(loaded), plots / "verify.nc", overwrite=True)
        written.append(plots / "verify.nc")
    if json_out:
        typer.echo(json.dumps({"runs": summaries, "scorecard": _jsonable(card)}, indent=2))
        return
    from cycler_da.verify_tables import print_tables

    print_tables(loaded, summaries, card)
    if plots is not None:
        typer.echo("wrote " + ", ".join(str(p) for p in written if p is not None))


def _verify_sweep(sweep_dir: Path, json_out: bool, plots: Path | None) -> None:
    """`cycler verify SWEEP_DIR`: settings pooled over start dates and seeds (cycler_da.verify_sweep)."""
    from cycler_da.verify import VerifyError
    from cycler_da.verify_sweep import pooled_scorecard, pooled_summary, settings

    try:
        groups = settings(sweep_dir)
        summaries = [pooled_summary(g) for g in groups]
        card = pooled_scorecard(groups)
    except (VerifyError, OSError) as err:
        _fail(str(err))
    if plots is not None:
        from cycler_da.verify_plots import rmse_by_start

        plots.mkdir(parents=True, exist_ok=True)
        written = rmse_by_start(groups, plots)
    if json_out:
        typer.echo(json.dumps({"settings": summaries, "scorecard": card}, indent=2))
        return
    from cycler_da.verify_tables import print_sweep_tables

    print_sweep_tables(summaries, card)
    if plots is not None:
        typer.echo(f"wrote {written}")


def _jsonable(card: list[dict]) -> list[dict]:
    out = []
    for row in card:
        item = {"run": row["run"], "channel": row["channel"]}
        for key, value in row.items():
            if isinstance(value, tuple):
                item[key] = {
                    "rmse_change_percent": round(float(value[0]), 3),
                    "p_value": round(float(value[1]), 4),
                }
        out.append(item)
    return out
