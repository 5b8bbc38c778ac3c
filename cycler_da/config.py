"""YAML configuration, validated with pydantic: unknown keys are errors listing the allowed ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cycler_da.core.channels import DEFAULT_CHANNELS, channels
from forecast_models.emulator import ArchitectureConfig
from forecast_models.training import TrainConfig


class ConfigError(ValueError):
    """A configuration file or value that cannot be used."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NatureData(Strict):
    """The nature run a model trains on (see ``cycler data nature``)."""

    resolution: Literal["T21", "T42"] = "T21"
    seed: int = 0
    compiled: bool = True


class ForecastDataConfig(Strict):
    nature: NatureData = NatureData()
    channels: list[str] = Field(default_factory=lambda: list(DEFAULT_CHANNELS))
    train: tuple[str, str] = ("2016-01-01", "2017-10-31T18")
    valid: tuple[str, str] = ("2017-11-01", "2017-12-31T18")

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str]) -> list[str]:
        channels(value)
        return value


class ForecastTrainingData(ForecastDataConfig):
    # Independent trajectories of the same climate (other nature-run seeds) over the same
    # training years: more weather to learn from. Validation stays on `nature.seed`, and the
    # normalisation comes from it alone, so checkpoints stay compatible with the truth.
    extra_seeds: list[int] = Field(default_factory=list)

    @field_validator("extra_seeds")
    @classmethod
    def _new_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(s < 0 for s in value):
            raise ValueError(f"extra_seeds must be distinct non-negative integers, got {value}")
        return value


class ForecastTrainingConfig(Strict):
    """``cycler train forecast``: data, model and optimisation (every default written out)."""

    data: ForecastTrainingData = ForecastTrainingData()
    model: ArchitectureConfig = ArchitectureConfig()
    training: TrainConfig = TrainConfig()
    # A checkpoint whose weights start the training (fine-tuning, e.g. training.epochs 0 and
    # a rollout phase); its architecture, channels, grid and normalisation must match.
    init_from: str | None = None

    @model_validator(mode="after")
    def _perturbations_need_a_parent(self) -> ForecastTrainingConfig:
        if self.training.perturbed_fraction > 0 and not self.init_from:
            raise ValueError(
                "training.perturbed_fraction needs init_from: the start perturbations are drawn "
                "from the forecast errors of the checkpoint being fine-tuned"
            )
        return self


M = TypeVar("M", bound=BaseModel)


def _field_types(tp: Any) -> dict[str, Any]:
    """Field name → annotation of a pydantic model or a dataclass (else empty)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {name: f.annotation for name, f in tp.model_fields.items()}
    if dataclasses.is_dataclass(tp):
        return {f.name: f.type for f in dataclasses.fields(tp)}
    return {}


def _describe(err: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            parent: Any = model
            for part in item["loc"][:-1]:
                parent = _field_types(parent).get(str(part))
            allowed = sorted(_field_types(parent))
            lines.append(f"unknown key {where!r}; allowed here: {', '.join(allowed)}")
        else:
            lines.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(lines)


def parse_config(data: dict | None, model: type[M], source: str = "config") -> M:
    """Validates a mapping against `model`, with readable errors."""
    try:
        return model.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err, model)}") from None


def load_config(path: str | Path | None, model: type[M], overrides: dict | None = None) -> M:
    """Reads YAML (or nothing, for all defaults), applies nested `overrides`, validates."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"no such config file: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML file (not UTF-8 text)") from None
        except yaml.YAMLError as err:
            message = " ".join(str(err).split())  # one line
            raise ConfigError(f"{path}: not valid YAML: {message}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data, model, str(path) if path else "config")


def dump_config(config: BaseModel) -> str:
    """The fully resolved config as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
