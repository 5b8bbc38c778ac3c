"""The layers, read from the source: imports point one way, methods stay apart, no circles.

* ``cycler_da.core`` (the contract and shared numerics) imports nothing else of the project;
* numerics and methods (forecast_models, observation_ops, baselines, score_da) import the
  core and other numerics, never the driver, the I/O or the CLI, and never a file format;
* a method package never imports another method package;
* no module imports itself back through others (imports inside functions count too).
"""

from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from cycler_da.core import known_methods, method_spec
from cycler_da.core.registry import ENTRY_POINT_GROUP

ROOT = Path(__file__).parents[1]
PACKAGES = ("cycler_da", "forecast_models", "observation_ops", "baselines", "score_da")
CORE = "cycler_da.core"
NUMERICS = ("forecast_models", "observation_ops", "baselines", "score_da")
METHOD_PACKAGES = ("baselines", "score_da")
FILE_FORMATS = ("xarray", "netCDF4", "cfgrib", "eccodes", "zarr", "yaml", "typer")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
}


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _project(name: str) -> str | None:
    """The project module an imported name refers to (the longest matching prefix), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if (candidate := ".".join(parts[:end])) in MODULES:
            return candidate
    return None


GRAPH = {
    module: {target for name in _imports(path) if (target := _project(name)) and target != module}
    for module, path in MODULES.items()
}


def _top(module: str) -> str:
    return module.split(".")[0]


def _in(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_layers_are_where_the_rules_expect_them():
    assert {
        f"{CORE}.contract",
        f"{CORE}.registry",
        "cycler_da.driver",
        "baselines.enkf",
        "score_da.lo_sda",
    } <= set(GRAPH)


def test_the_core_imports_nothing_else_of_the_project():
    wrong = {
        m: sorted(t for t in targets if not _in(t, CORE)) for m, targets in GRAPH.items() if _in(m, CORE)
    }
    assert not {m: t for m, t in wrong.items() if t}, "the core imports outside itself"


def test_numerics_never_import_the_driver_io_or_cli():
    wrong = {}
    for module, targets in GRAPH.items():
        if _top(module) in NUMERICS:
            bad = [t for t in targets if _top(t) == "cycler_da" and not _in(t, CORE)]
            if bad:
                wrong[module] = sorted(bad)
    assert not wrong, f"numerics import the driver side: {wrong}"


def test_numerics_and_core_read_no_file_format():
    wrong = {}
    for module, path in MODULES.items():
        if _top(module) in NUMERICS or _in(module, CORE):
            if bad := sorted(n for n in _imports(path) if n.split(".")[0] in FILE_FORMATS):
                wrong[module] = bad
    assert not wrong, f"numerics touch files directly: {wrong}"


def test_methods_never_import_another_method_package():
    wrong = {}
    for module, targets in GRAPH.items():
        home = _top(module)
        if home in NUMERICS:
            bad = [t for t in targets if _top(t) in METHOD_PACKAGES and _top(t) != home]
            if bad:
                wrong[module] = sorted(bad)
    assert not wrong, f"a package imports a method package: {wrong}"


def test_no_import_circle():
    try:
        TopologicalSorter(GRAPH).prepare()
    except CycleError as err:
        pytest.fail(f"import circle: {' -> '.join(err.args[1])}")


def test_the_checks_see_imports_inside_functions_and_circles(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from cycler_da.driver import run_cycle\n")
    assert {_project(name) for name in _imports(bad)} == {"cycler_da.driver"}
    with pytest.raises(CycleError):
        TopologicalSorter({"a": {"b"}, "b": {"a"}}).prepare()


@pytest.mark.parametrize("name", known_methods())
def test_every_method_is_one_file_with_documented_parameters(name):
    """Its MethodSpec, parameters and builder live in one module; every parameter has a docstring."""
    spec = method_spec(name)
    module = sys.modules[spec.build.__module__]
    assert module.METHOD is spec and spec.params.__module__ == module.__name__
    entry = next(ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name)
    assert entry.value == f"{module.__name__}:METHOD"
    undocumented = [field for field, _, doc in spec.describe() if not doc]
    assert not undocumented, f"{name}: parameters without a docstring: {undocumented}"


@pytest.mark.parametrize("module", ["cycler_da.driver", "cycler_da.run_setup", "cycler_da.run_status"])
def test_the_driver_is_made_of_short_functions(module):
    tree = ast.parse(MODULES[module].read_text())
    long = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 50
    }
    assert not long, f"functions over 50 lines in {module}: {long}"
