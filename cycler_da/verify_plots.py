"""PNG figures of ``cycler verify``: error vs window, error vs lead, maps, increment spectra."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cycler_da.core.channels import TIME, channel

PANEL_CHANNELS = ("z500", "t850", "u250", "msl")
LEAD = "prediction_timedelta"


def _units(label: str) -> str:
    units = channel(label).variable.units
    for raw, pretty in (("**-2", "⁻²"), ("**-1", "⁻¹"), ("**2", "²")):
        units = units.replace(raw, pretty)
    return units


def _panels(labels: list[str]) -> list[str]:
    chosen = [c for c in PANEL_CHANNELS if c in labels]
    return chosen or labels[:4]


def error_vs_window(runs, path: Path) -> Path:
    labels = _panels(runs[0].labels)
    fig, axes = plt.subplots(len(labels), 1, figsize=(9, 2.4 * len(labels)), sharex=True, squeeze=False)
    for ax, label in zip(axes[:, 0], labels, strict=True):
        for k, run in enumerate(runs):
            color = f"C{k}"
            s = run.scores.sel(channel=label)
            times = pd.DatetimeIndex(s[TIME].values)
            ax.plot(
                times, s["analysis_rmse"], color=color, lw=1.4, label=f"{run.name} ({run.method}) analysis"
            )
            ax.plot(times, s["background_rmse"], color=color, lw=0.9, ls="--", label=f"{run.name} background")
            if "flagged" in s and (flagged := s["flagged"].values > 0).any():  # replaced by the guard
                ax.plot(times[flagged], s["analysis_rmse"].values[flagged], "x", color=color, ms=7)
        ax.set_ylabel(f"{label} RMSE\n[{_units(label)}]")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[0, 0].set_title("Analysis (solid) and background (dashed) RMSE against the truth, per window")
    axes[-1, 0].set_xlabel("analysis time (UTC)")
    fig.autofmt_xdate()
    return _save(fig, path / "error_vs_window.png")


def error_vs_lead(runs, path: Path) -> Path | None:
    with_forecasts = [r for r in runs if r.forecasts is not None and r.forecasts.sizes[TIME]]
    if not with_forecasts:
        return None
    labels = _panels(runs[0].labels)
    fig, axes = plt.subplots(
        2, len(labels), figsize=(3.9 * len(labels), 6.6), sharex=True, squeeze=False, constrained_layout=True
    )
    for j, label in enumerate(labels):
        for k, run in enumerate(runs):
            if run not in with_forecasts:
                continue
            f = run.forecasts.sel(channel=label)
            hours = f[LEAD].values / np.timedelta64(1, "h")
            rmse = np.sqrt((f["forecast_rmse"] ** 2).mean(TIME, skipna=True))
            axes[0, j].plot(hours, rmse, marker="o", ms=3, color=f"C{k}", label=f"{run.name} ({run.method})")
            axes[1, j].plot(hours, f["forecast_acc"].mean(TIME, skipna=True), marker="o", ms=3, color=f"C{k}")
        axes[0, j].set_title(label)
        axes[0, j].set_ylabel(f"RMSE [{_units(label)}]")
        axes[1, j].set_ylabel("ACC")
        axes[1, j].set_xlabel("lead time [h]")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Forecasts from analyses against the truth (RMSE: sqrt of the mean MSE over initial times)")
    return _save(fig, path / "error_vs_lead.png")


def maps(runs, diagnostics: list[dict], path: Path) -> Path:
    labels = [c for c in ("z500", "t850") if c in runs[0].labels] or runs[0].labels[:2]
    fields = [(f"mean increment {c}", "mean_increment", c) for c in labels]
    fields += [(f"mean analysis error {c}", "analysis_bias", c) for c in labels]
    fig, axes = plt.subplots(
        len(runs),
        len(fields),
        figsize=(3.9 * len(fields), 2.4 * len(runs) + 0.6),
        squeeze=False,
        constrained_layout=True,
    )
    for i, (run, diag) in enumerate(zip(runs, diagnostics, strict=True)):
        lat, lon = run.grid.latitudes, run.grid.longitudes
        for j, (title, key, label) in enumerate(fields):
            ax = axes[i, j]
            data = diag[key]
            if data is None:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "truth unavailable", ha="center", transform=ax.transAxes)
                continue
            field = data[run.labels.index(label)]
            limit = float(np.nanmax(np.abs(field))) or 1.0
            mesh = ax.pcolormesh(lon, lat, field, cmap="RdBu_r", vmin=-limit, vmax=limit, shading="nearest")
            fig.colorbar(mesh, ax=ax, shrink=0.85, label=_units(label))
            if i == 0:
                ax.set_title(title, fontsize=9)
            if j == 0:
                ax.text(
                    -0.32,
                    0.5,
                    f"{run.name}\n({run.method})",
                    transform=ax.transAxes,
                    rotation=90,
                    ha="center",
                    va="center",
                    fontsize=7,
                )
            ax.set_xlabel("longitude [°E]", fontsize=7)
            ax.set_ylabel("latitude [°N]", fontsize=7)
            ax.tick_params(labelsize=7)
    return _save(fig, path / "maps.png")


def increment_spectra(runs, diagnostics: list[dict], path: Path) -> Path:
    labels = [c for c in ("z500", "t850", "u250") if c in runs[0].labels] or runs[0].labels[:3]
    fig, axes = plt.subplots(
        1, len(labels), figsize=(4.4 * len(labels), 3.6), squeeze=False, constrained_layout=True
    )
    for j, label in enumerate(labels):
        ax = axes[0, j]
        for k, (run, diag) in enumerate(zip(runs, diagnostics, strict=True)):
            power = diag["increment_spectrum"][run.labels.index(label)]
            wavenumber = np.arange(len(power))
            if np.any(power[1:] > 0):
                ax.loglog(wavenumber[1:], power[1:], color=f"C{k}", label=f"{run.name} ({run.method})")
        ax.set_title(f"{label} increments")
        ax.set_xlabel("zonal wavenumber")
        ax.set_ylabel(f"power [({_units(label)})²]")
        ax.grid(alpha=0.3, which="both")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Zonal power spectra of the analysis increments (time mean, area-weighted over latitudes)")
    return _save(fig, path / "increment_spectra.png")


def rank_histograms(runs, diagnostics: list[dict], path: Path) -> Path | None:
    ensembles = [(r, d) for r, d in zip(runs, diagnostics, strict=True) if d["rank_histogram"] is not None]
    if not ensembles:
        return None
    labels = _panels(runs[0].labels)
    fig, axes = plt.subplots(
        len(ensembles),
        len(labels),
        figsize=(3.4 * len(labels), 2.6 * len(ensembles)),
        squeeze=False,
        constrained_layout=True,
    )
    for i, (run, diag) in enumerate(ensembles):
        for j, label in enumerate(labels):
            counts = diag["rank_histogram"][run.labels.index(label)]
            frequency = counts / counts.sum()
            ax = axes[i, j]
            ax.bar(
                np.arange(len(counts)), frequency, width=1.0, color=f"C{runs.index(run)}", edgecolor="white"
            )
            ax.axhline(1 / len(counts), color="k", lw=0.8, ls="--", label="flat (calibrated)")
            ax.set_title(label if i == 0 else "", fontsize=9)
            if j == 0:
                ax.text(
                    -0.3,
                    0.5,
                    f"{run.name}\n({run.method})",
                    transform=ax.transAxes,
                    rotation=90,
                    ha="center",
                    va="center",
                    fontsize=7,
                )
            ax.set_xlabel("rank of the truth among the background members", fontsize=7)
            ax.set_ylabel("frequency", fontsize=7)
    axes[0, 0].legend(fontsize=7)
    return _save(fig, path / "rank_histograms.png")


def _save(fig, file: Path) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return file


def rmse_by_start(settings, path: Path) -> Path:
    """A sweep's analysis RMSE per start date, one line per setting: which rankings hold across starts."""
    runs = next(iter(settings)).runs
    labels = _panels(next(iter(runs.values())).labels)
    fig, axes = plt.subplots(
        1, len(labels), figsize=(3.9 * len(labels), 3.6), squeeze=False, constrained_layout=True
    )
    for j, label in enumerate(labels):
        ax = axes[0, j]
        for k, setting in enumerate(settings):
            keys = sorted(setting.runs)
            rmse = [
                float(np.sqrt((setting.runs[key].scores["analysis_rmse"].sel(channel=label) ** 2).mean()))
                for key in keys
            ]
            ax.plot(
                [f"{start[:10]}\nseed {seed}" for start, seed in keys],
                rmse,
                marker="o",
                color=f"C{k}",
                label=setting.label,
            )
        ax.set_title(label)
        ax.set_ylabel(f"analysis RMSE [{_units(label)}]")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Analysis RMSE of each run, by start date and seed")
    return _save(fig, path / "rmse_by_start.png")
