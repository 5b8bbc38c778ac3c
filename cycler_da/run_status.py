"""``run.json``: what a run is, how far it got, and whether it may start or resume.

A window counts as done only once its files are written and ``run.json`` says so (written
last, atomically), so a run killed at any moment resumes from its last complete window.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cycler_da import __version__
from cycler_da.config import dump_config
from cycler_da.provenance import config_hash, git_commit
from cycler_da.run_config import RunConfig
from cycler_da.run_io import now, read_json, stamp, write_json
from cycler_da.run_setup import RunError, Setup

CONFIG_FILE = "config.yaml"
STATUS_FILE = "run.json"


class RunStatus:
    """The status of one run directory, kept in ``run.json``.

    Args:
        path: The ``run.json`` file.
        data: Its contents.
    """

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    @staticmethod
    def check(run_dir: Path, config: RunConfig, resume: bool) -> None:
        """Refuses, before any work, to overwrite a run or to resume one made with another config."""
        if run_dir.exists() and not resume:
            raise RunError(f"{run_dir} exists: pass --resume to continue it, or choose another --name")
        if not resume:
            return
        if not (run_dir / STATUS_FILE).exists():
            raise RunError(f"nothing to resume: {run_dir / STATUS_FILE} does not exist")
        if (run_dir / CONFIG_FILE).read_text() != dump_config(config):
            raise RunError(f"{run_dir} was made with another configuration; resume with the same options")

    @classmethod
    def create(cls, s: Setup) -> RunStatus:
        """A new run's status (the resolved config is written beside it)."""
        config = s.config
        (s.run_dir / CONFIG_FILE).write_text(dump_config(config))
        data = {
            "status": "running",
            "created": now(),
            "cycler_version": __version__,
            "git_commit": git_commit(),
            "config_hash": config_hash(config.model_dump(mode="json")),
            "seed": config.run.seed,
            "method": config.method.name,
            "members": config.ensemble.members,
            "checkpoint": {"path": str(s.checkpoint), "sha256": s.checkpoint_sha},
            "truth": s.truth_path,
            "windows_total": len(s.windows),
            "windows_done": [],
            "wall_seconds": {},
            "nfe": {},
        }
        return cls(s.run_dir / STATUS_FILE, data)

    @classmethod
    def load(cls, run_dir: Path) -> RunStatus:
        path = run_dir / STATUS_FILE
        return cls(path, read_json(path))

    @property
    def done(self) -> set[str]:
        """Stamps of the complete windows."""
        return set(self.data["windows_done"])

    def last_done(self) -> pd.Timestamp | None:
        """The latest complete window, or None before the first."""
        return max((pd.Timestamp(t) for t in self.data["windows_done"]), default=None)

    def kept(self, rows: list[dict]) -> list[dict]:
        """The score rows of complete windows (a killed run may have written one more)."""
        done = self.done
        return [r for r in rows if stamp(r["time"]) in done]

    def mark(self, status: str) -> None:
        """Sets ``running``, ``interrupted`` or ``complete`` and saves."""
        self.data["status"] = status
        self.save()

    def window_done(self, time: pd.Timestamp, seconds: float, nfe: float, flag: str = "") -> None:
        """Records a complete window (and what the divergence guard did); its files must be written."""
        key = stamp(time)
        self.data["windows_done"].append(key)
        if flag:
            self.data.setdefault("flagged", {})[key] = flag
        self.data["wall_seconds"][key] = round(seconds, 4)
        self.data["nfe"][key] = nfe
        self.data["updated"] = now()
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)
