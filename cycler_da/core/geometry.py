"""Distances on the sphere, shared by localisation, QC thinning and the B models."""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0


def great_circle_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Pairwise great-circle distances (km) between points 1 (rows) and points 2 (columns)."""
    p1, p2 = np.radians(lat1)[:, None], np.radians(lat2)[None, :]
    dlon = np.radians(lon2)[None, :] - np.radians(lon1)[:, None]
    cos_angle = np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dlon)
    return EARTH_RADIUS_KM * np.arccos(np.clip(cos_angle, -1.0, 1.0))
