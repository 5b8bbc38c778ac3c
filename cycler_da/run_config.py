"""The experiment configuration of ``cycler run``: one YAML file selects every plugin."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cycler_da.config import NatureData, Strict
from cycler_da.core.channels import DEFAULT_CHANNELS, channels


class RunSection(Strict):
    """When, what and where.

    start: the initial analysis time t0 (cold start); windows follow every 6 h.
    protocol: "cycle" (the analysis starts the next forecast) or "seed" (every background
    is a 48-h forecast from the truth, no cycling: the seed papers' protocol).
    """

    start: datetime = datetime(2018, 1, 1)
    days: float = 30.0
    name: str | None = None
    runs_dir: str = "runs"
    seed: int = 0
    device: str = "cpu"
    protocol: Literal["cycle", "seed"] = "cycle"

    @field_validator("days")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0 or (value * 4) % 1:
            raise ValueError("days must be positive and a whole number of 6-hour windows")
        return value


class TruthSection(Strict):
    """The truth: the embedded nature run (default) or a dataset path in our conventions."""

    source: Literal["nature", "dataset"] = "nature"
    nature: NatureData = NatureData()
    path: str | None = None
    train_period: tuple[str, str] = ("2016-01-01", "2017-10-31T18")

    @model_validator(mode="after")
    def _path_for_dataset(self) -> TruthSection:
        if self.source == "dataset" and not self.path:
            raise ValueError("truth.source 'dataset' needs truth.path")
        return self


class ForecastSection(Strict):
    """The forecast model, and forecasts from analyses for verification.

    checkpoint: "default" = the shipped weights, or a checkpoint path.
    from_hours: UTC hours whose analyses start a forecast (written to forecasts/ and scored
        against the truth); [] switches them off.
    max_lead_hours, lead_step_hours: forecast length and output interval (multiples of 6).
    compile: run the network through torch.compile (faster steps after a one-off compile).
    write_members: write every member's forecast; by default an ensemble writes its mean only
        (a 40-member 5-day forecast is 72 MB) — the scores use every member either way.
    previous: what a two-frame emulator takes as the state 6 hours before each member:
        "mean", the previous analysis's ensemble mean shifted by the member's departure from
        the current mean, so every member takes the ensemble mean's tendency (members drawn
        independently, as the diffusion methods draw them, have no partner in the previous
        window, and a departure read as tendency would be extrapolated); or the same
        "members" (an EnKF's members are trajectories). One-frame emulators ignore it.
    """

    checkpoint: str = "default"
    compile: bool = False
    write_members: bool = False
    from_hours: list[int] = Field(default_factory=lambda: [0])
    max_lead_hours: int = 120
    lead_step_hours: int = 6
    previous: Literal["mean", "members"] = "mean"

    @field_validator("from_hours")
    @classmethod
    def _synoptic(cls, value: list[int]) -> list[int]:
        if any(h not in (0, 6, 12, 18) for h in value):
            raise ValueError(f"from_hours must be among 0, 6, 12, 18 (analysis times); got {value}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _leads(self) -> ForecastSection:
        if (
            self.lead_step_hours <= 0
            or self.lead_step_hours % 6
            or self.max_lead_hours % self.lead_step_hours
        ):
            raise ValueError("lead_step_hours must be a positive multiple of 6 dividing max_lead_hours")
        if self.max_lead_hours <= 0:
            raise ValueError("max_lead_hours must be positive")
        return self


class NetworkSection(Strict):
    kind: Literal["columns", "elements", "stations", "swaths"] = "columns"
    fraction: float = 0.05
    resample: bool = True
    stations: int = 500
    swaths: int = 2
    swath_width: float = 20.0
    swath_drift: float = 25.0
    channels: list[str] | Literal["all"] = "all"
    seed: int = 1

    @field_validator("channels")
    @classmethod
    def _known(cls, value: list[str] | str) -> list[str] | str:
        if value != "all":
            channels(value)
        return value


class QCSection(Strict):
    """Quality control applied identically before every method.

    background_check: reject |O−B| > k·sqrt(σ_o² + σ_b²) (None disables).
    background_error_scale: σ_b = this × the std of 24-h forecast errors over the training
        years, for every method (ensembles too); independent of any method's parameters, so
        QC is identical for every method.
    thinning_km: keep at most one observation per channel within this distance (None: off).
    """

    background_check: float | None = 5.0
    background_error_scale: float = 2.5
    thinning_km: float | None = None


class ObservationsSection(Strict):
    """Networks, errors and QC.

    error_std: the observation-error standard deviation of every channel as a fraction of
    its climatological standard deviation (``relative``), or per channel in physical units
    (``absolute``: {label: value}); absolute entries override the relative default.
    """

    networks: list[NetworkSection] = Field(default_factory=lambda: [NetworkSection()])
    relative_error: float = 0.1
    absolute_error: dict[str, float] = Field(default_factory=dict)
    qc: QCSection = QCSection()


class MethodSection(Strict):
    name: str = "3dvar"
    params: dict[str, Any] = Field(default_factory=dict)


class EnsembleSection(Strict):
    """members: ensemble size (1 = deterministic; the EnKF needs more)."""

    members: int = Field(1, ge=1)


class ColdStartSection(Strict):
    """The first analysis x_a(t0).

    kind: "forecast" = a lead_hours forecast from truth(t0 − lead_hours), as the seed papers
    do; members start lagged_hours earlier each (a time-lagged ensemble). "truth_noise" =
    truth(t0) plus noise_std (normalised units) of white noise per member.
    """

    kind: Literal["forecast", "truth_noise"] = "forecast"
    lead_hours: int = 48
    lagged_hours: int = 6
    noise_std: float = 0.3


class GuardSection(Strict):
    """The divergence guard, applied to every analysis (see cycler_da/guard.py).

    on_divergence: what replaces an analysis that fails: "stop" the run (earlier windows are
        kept; --resume retries), the window's "background", or a "3dvar" analysis of the window.
    max_increment: the largest grid RMS of a member's increment, per channel, in background-error
        standard deviations (B's); the LETKF's first windows, from a time-lagged cold start,
        reach about 10 (benchmarks/guard_replay.py).
    max_fit_ratio: the largest RMS (O−A)/σ_o, as a multiple of max(1, RMS (O−B)/σ_o).
    """

    on_divergence: Literal["stop", "background", "3dvar"] = "stop"
    max_increment: float = Field(25.0, gt=0)
    max_fit_ratio: float = Field(3.0, gt=0)


class RunConfig(Strict):
    """Everything ``cycler run`` needs; the resolved copy is written to the run directory."""

    run: RunSection = RunSection()
    truth: TruthSection = TruthSection()
    channels: list[str] = Field(default_factory=lambda: list(DEFAULT_CHANNELS))
    forecast: ForecastSection = ForecastSection()
    observations: ObservationsSection = ObservationsSection()
    method: MethodSection = MethodSection()
    ensemble: EnsembleSection = EnsembleSection()
    cold_start: ColdStartSection = ColdStartSection()
    guard: GuardSection = GuardSection()

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str]) -> list[str]:
        channels(value)
        return value


# Method defaults that make sense without a config file (written into the resolved config).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "enkf": {"members": 40},
}
