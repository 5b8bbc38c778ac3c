"""The method ``none``: no analysis, so the background goes on unchanged (a free forecast run)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cycler_da.core import Analysis, MethodContext, MethodSpec, Observations


@dataclass(frozen=True)
class FreeRunParams:
    """``none`` takes no parameters."""


class FreeRun:
    """Returns the background as the analysis."""

    def analyse(
        self, background: Tensor, observations: Observations, *, generator: torch.Generator | None = None
    ) -> Analysis:
        return Analysis(background, {})


def build(context: MethodContext, params: FreeRunParams) -> FreeRun:
    return FreeRun()


METHOD = MethodSpec("none", FreeRunParams, build)
