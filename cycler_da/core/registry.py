"""The registry of analysis methods: found by name, validated, defaulted, built.

Every method, in-tree or from another package, is a :class:`MethodSpec` named by an entry
point of the group ``cycler.analysis_methods``::

    [project.entry-points."cycler.analysis_methods"]
    "3dvar" = "baselines.three_dvar:METHOD"

Its ``params`` dataclass declares the parameters once: the fields are the YAML keys of
``method.params``, with their defaults and a docstring each. The driver validates a run's
parameters against it (unknown keys and wrong types are errors that name the allowed ones)
and writes every value, given or default, to the resolved config. :func:`register` adds a
method without installing a package (a notebook, a test).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cycler_da.core.contract import AnalysisMethod, MethodContext

ENTRY_POINT_GROUP = "cycler.analysis_methods"


class MethodError(ValueError):
    """An unknown method, parameters it does not take, or a method that cannot be loaded."""


@dataclass(frozen=True)
class MethodSpec:
    """An analysis method as the driver sees it.

    Attributes:
        name: The method's name in YAML (``method.name``) and on the command line.
        params: A dataclass whose fields are the method's parameters (``method.params``).
        build: ``build(context, params) -> AnalysisMethod``, called once per run.
        members: The ensemble size a run takes when it does not set one.
    """

    name: str
    params: type
    build: Callable[[MethodContext, Any], AnalysisMethod]
    members: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.params, type) and dataclasses.is_dataclass(self.params)):
            raise TypeError(f"method {self.name!r}: params must be a dataclass, got {self.params!r}")
        if self.members < 1:
            raise ValueError(f"method {self.name!r}: members must be >= 1; got {self.members}")

    @property
    def summary(self) -> str:
        """The first line of the method module's docstring."""
        doc = inspect.getdoc(sys.modules.get(self.build.__module__)) or ""
        first = doc.split("\n\n")[0].replace("\n", " ").removeprefix(f"The method ``{self.name}``: ")
        return first[:1].upper() + first[1:]

    def describe(self) -> list[tuple[str, Any, str]]:
        """(name, default, docstring) of every parameter, read from the dataclass's source."""
        docs: dict[str, str] = {}
        for cls in reversed(self.params.__mro__):
            if not dataclasses.is_dataclass(cls):
                continue
            body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
            for field, doc in itertools.pairwise(body):
                if (
                    isinstance(field, ast.AnnAssign)
                    and isinstance(doc, ast.Expr)
                    and isinstance(doc.value, ast.Constant)
                ):
                    docs[field.target.id] = inspect.cleandoc(str(doc.value.value))
        return [(name, value, docs.get(name, "")) for name, value in self.defaults().items()]

    def defaults(self) -> dict[str, Any]:
        """Every parameter with its default, in declaration order."""
        return dataclasses.asdict(self.params())

    def parameters(self, given: Mapping[str, Any] | None = None) -> Any:
        """The parameters dataclass for `given` (the rest defaulted); a one-line error if invalid."""
        given = dict(given or {})
        allowed = [f.name for f in dataclasses.fields(self.params)]
        if unknown := sorted(set(given) - set(allowed)):
            raise MethodError(f"{unknown} are not parameters of {self.name!r}; allowed: {', '.join(allowed)}")
        try:
            return TypeAdapter(self.params).validate_python(given)
        except ValidationError as err:
            problems = []
            for item in err.errors():
                where = ".".join(str(part) for part in item["loc"])
                message = str(item["msg"]).removeprefix("Value error, ")
                problems.append(f"{where}: {message}" if where else message)
            raise MethodError(f"{self.name!r}: {'; '.join(problems)}") from None


_REGISTERED: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Makes `spec` known without an entry point; a name already taken is an error."""
    if spec.name in _REGISTERED or spec.name in _entry_points():
        raise MethodError(f"analysis method {spec.name!r} is registered twice")
    _REGISTERED[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Forgets a method added by :func:`register` (entry points stay)."""
    _REGISTERED.pop(name, None)


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_methods() -> list[str]:
    """The names of every method that can be built."""
    return sorted({*_REGISTERED, *_entry_points()})


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` called `name`; an unknown name lists the known ones."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    entry = _entry_points().get(name)
    if entry is None:
        raise MethodError(f"unknown analysis method {name!r}; known: {', '.join(known_methods())}")
    try:
        spec = entry.load()
    except Exception as err:
        raise MethodError(
            f"analysis method {name!r} ({entry.value}) cannot be loaded: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(spec, MethodSpec) or spec.name != name:
        raise MethodError(
            f"entry point {name!r} = {entry.value!r} must name a MethodSpec called {name!r}; got {spec!r}"
        )
    return spec


def build_method(name: str, context: MethodContext, /, **params: Any) -> AnalysisMethod:
    """Builds method `name` with `params` (validated and defaulted) for `context`."""
    spec = method_spec(name)
    return spec.build(context, spec.parameters(params))
