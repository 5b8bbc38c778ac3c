"""The analysis contract and the numerics that the driver and every method share.

Nothing here imports the driver, the I/O or a method package: those import this.
"""

from cycler_da.core.contract import Analysis, AnalysisMethod, MethodContext, ObservationOperator, Observations
from cycler_da.core.registry import MethodSpec, build_method, known_methods, method_spec, register

__all__ = [
    "Analysis",
    "AnalysisMethod",
    "MethodContext",
    "MethodSpec",
    "ObservationOperator",
    "Observations",
    "build_method",
    "known_methods",
    "method_spec",
    "register",
]
