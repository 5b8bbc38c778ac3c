"""Provenance attributes that every output file carries."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache
from pathlib import Path

from cycler_da import __version__


@cache
def git_commit() -> str:
    """The source tree's commit, or "none" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    return out.stdout.strip() if out.returncode == 0 else "none"


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-serialisable config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def provenance_attrs(config: dict, seed: int | None = None) -> dict[str, str | int]:
    """Global attributes recording what made a file."""
    attrs: dict[str, str | int] = {
        "cycler_version": __version__,
        "git_commit": git_commit(),
        "config_hash": config_hash(config),
        "config": json.dumps(config, sort_keys=True, default=str),
    }
    if seed is not None:
        attrs["seed"] = seed
    return attrs


def training_provenance(command: str, device: str, wall_seconds: float) -> dict:
    """How a checkpoint was trained: command, device, threads, machine, date and versions."""
    import platform
    import sys
    from datetime import UTC, datetime

    import torch

    return {
        "command": command or " ".join(sys.argv),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cycler_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "wall_seconds": wall_seconds,
    }


def parent_provenance(path: Path, manifest: dict) -> dict:
    """What a training started from (``init_from``): the parent checkpoint's path, hash, command and
    training time, and its own parent's, so the whole chain of stages stays on record."""
    from forecast_models.checkpoint import file_hash

    training = manifest.get("training", {})
    parent = {
        "path": str(path),
        "sha256": file_hash(path),
        "command": training.get("command"),
        "wall_seconds": training.get("wall_seconds"),
    }
    if training.get("init_from"):
        parent["init_from"] = training["init_from"]
    return parent


def interrupted_state(out: Path, resume: bool, suffix: str = ".train-state") -> Path:
    """Where a training that writes `out` keeps its resumable state; refuses a leftover one unless resuming."""
    path = out.with_name(out.name + suffix)
    if path.exists() and not resume:
        raise FileExistsError(f"{path} exists from an interrupted run: pass --resume, or delete it")
    return path
