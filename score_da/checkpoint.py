"""Checkpoints of the score-based components: weights and a manifest in one file.

One format for the autoencoder (``kind: "vae"``) and the diffusion prior (``kind:
"prior"``). The manifest holds the architecture, channels, grid, normalisation and
training provenance, so a checkpoint that does not match the data is refused by
:func:`forecast_models.checkpoint.check_compatible` with a message saying why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from forecast_models.checkpoint import CheckpointError, read_payload, write_payload
from score_da.latent import AutoencoderConfig, LatentSpace
from score_da.networks import Denoiser, coarsen_latitudes
from score_da.schedule import VPSchedule
from score_da.vre import PhyDAModel, VirtualReconstruction

FORMAT = "cycler-score-checkpoint/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
# Shipped checkpoints by name: "default", "anomaly" (the autoencoder of states' departures
# from the zonal-time mean, configs/vae_t21_anomaly.yaml, and its prior), and the default
# prior aligned by Align-DA on its multi-reward ("aligned") and physics-only ("aligned-physics") pairs.
SHIPPED = {
    "vae": {"default": WEIGHTS_DIR / "vae-T21.pt", "anomaly": WEIGHTS_DIR / "vae-T21-anomaly.pt"},
    "prior": {
        "default": WEIGHTS_DIR / "prior-T21.pt",
        "anomaly": WEIGHTS_DIR / "prior-T21-anomaly.pt",
        "aligned": WEIGHTS_DIR / "prior-T21-aligned.pt",
        "aligned-physics": WEIGHTS_DIR / "prior-T21-aligned-physics.pt",
        "state-default": WEIGHTS_DIR / "prior-T21-state.pt",
        "phyda": WEIGHTS_DIR / "prior-T21-phyda.pt",
        "phyda-no-prdo": WEIGHTS_DIR / "prior-T21-phyda-no-prdo.pt",
        "phyda-no-vre": WEIGHTS_DIR / "prior-T21-phyda-no-vre.pt",
    },
}


def resolve(path: str | Path, kind: str) -> Path:
    """The name of a shipped checkpoint of `kind` (``"default"``, ``"anomaly"``, ...) → its file; anything else is a path."""
    return SHIPPED[kind].get(str(path), Path(path))


def save(path: str | Path, module: nn.Module, manifest: dict) -> Path:
    """Writes weights and manifest atomically (the manifest must be JSON-serialisable)."""
    return write_payload(path, FORMAT, manifest, module.state_dict())


def read(path: str | Path, kind: str) -> tuple[dict, dict]:
    """(manifest, state_dict) of a checkpoint of `kind`, with clear errors on anything else."""
    manifest, state_dict = read_payload(path, FORMAT, kind)
    if manifest.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {manifest.get('kind')!r} model, not a {kind!r}")
    return manifest, state_dict


def load_into(module: nn.Module, state_dict: dict, path: str | Path) -> nn.Module:
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the manifest's architecture: {err}") from err
    return module.eval()


def load_latent_space(path: str | Path = "default", device: str = "cpu") -> tuple[LatentSpace, dict]:
    """The autoencoder of a ``vae`` checkpoint (``"default"``: the shipped one), in eval mode."""
    path = resolve(path, "vae")
    manifest, state = read(path, "vae")
    # Manifests from before `anomalies` lack the key: the config's default (plain states) applies.
    space = LatentSpace.build(
        AutoencoderConfig(**manifest["architecture"]),
        manifest["channels"],
        np.asarray(manifest["grid"]["latitudes"]),
    )
    space = load_into(space, state, path)
    return space.to(device), manifest


def in_state_space(manifest: dict) -> bool:
    """Whether a prior's manifest says it samples the state itself (not an autoencoder's latent)."""
    return manifest.get("space", "latent") == "state"


def load_prior(path: str | Path = "default", device: str = "cpu") -> tuple[Denoiser, VPSchedule, dict]:
    """The denoiser (EMA weights) and schedule of a ``prior`` checkpoint, in eval mode."""
    path = resolve(path, "prior")
    manifest, state = read(path, "prior")
    if "vre" in manifest:
        raise CheckpointError(
            f"{path} is a PhyDA prior: it conditions on the observations through its VRE, so only phyda samples it"
        )
    denoiser = _denoiser(manifest)
    return load_into(denoiser, state, path).to(device), denoiser.schedule, manifest


def load_phyda(path: str | Path, device: str = "cpu") -> tuple[PhyDAModel, VPSchedule, dict]:
    """The VRE and prior (EMA weights) of a PhyDA checkpoint, and its schedule, in eval mode."""
    path = resolve(path, "prior")
    manifest, state = read(path, "prior")
    if "vre" not in manifest:
        raise CheckpointError(
            f"{path} has no VRE: train it with vre.enabled (or sample it with dps or lo-sda)"
        )
    v = manifest["vre"]
    latitudes = np.asarray(manifest["grid"]["latitudes"])
    vre = VirtualReconstruction(manifest["channels"], latitudes, v["width"], v["depth"], v["blocks"])
    model = load_into(PhyDAModel(_denoiser(manifest), vre), state, path).to(device)
    return model, model.denoiser.schedule, manifest


def _denoiser(manifest: dict) -> Denoiser:
    latitudes = np.asarray(manifest["grid"]["latitudes"])
    if not in_state_space(manifest):
        latitudes = coarsen_latitudes(latitudes)
    return Denoiser(manifest["latent"]["channels"], latitudes, **manifest["architecture"])
