"""The layout rules the code keeps (docs/architecture.md): core never imports Dagster, no import
cycles, the CLI only parses, calls and prints, one name per stage, the demo's definitions load,
core's packages build only on those below them, modules and functions stay short enough to read
at once, and a filter's name is spelled in the filter registry."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg

from mix_pipeline.core.filters.registry import DECONTAMINATION, FILTER_NAMES
from mix_pipeline.core.gates.checks import CHECKS
from mix_pipeline.defs import ASSET_MODULES, build_definitions
from mix_pipeline.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mix_pipeline"
# Plain modules: everything Dagster-free the Dagster layer builds on.
PLAIN = ["mix_pipeline/core", "mix_pipeline/recipe", "mix_pipeline/names.py", "mix_pipeline/layout.py",
         "mix_pipeline/errors.py"]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            # `from mix_pipeline.core.provenance import catalog` imports the module mix_pipeline.core.provenance.catalog.
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def package_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_plain_modules_import_neither_dagster_nor_the_dagster_layer():
    offenders = []
    for entry in PLAIN:
        for path in sorted((REPO / entry).rglob("*.py")) if (REPO / entry).is_dir() else [REPO / entry]:
            bad = {m for m in imports(path) if m.split(".")[0].startswith("dagster") or m.startswith("mix_pipeline.defs")
                   or m in ("mix_pipeline.resources", "mix_pipeline.definitions", "mix_pipeline.cli")}
            offenders += [f"{path.relative_to(REPO)}: {m}" for m in sorted(bad)]
    assert offenders == []
    # And at run time: running every stage's module loads no Dagster.
    code = ("import sys, mix_pipeline.core.stages, mix_pipeline.core.lab.search, mix_pipeline.core.provenance.trace; "
            "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_no_import_cycles():
    graph = package_graph()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package's __init__ re-exporting its own modules is not a cycle of logic.
    cycles = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert cycles == []


def test_the_cli_parses_calls_and_prints():
    """No orchestration in cli.py: it never imports Dagster or the planner, only defs/runner's entry points."""
    found = imports(PACKAGE / "cli.py")
    assert not {m for m in found if m.split(".")[0].startswith("dagster")}
    assert {m for m in found if m.startswith("mix_pipeline.defs")} <= {"mix_pipeline.defs.runner",
                                                                        "mix_pipeline.defs.runner.run_recipe",
                                                                        "mix_pipeline.defs.runner.run_lab_experiment",
                                                                        "mix_pipeline.defs.runner.forget",
                                                                        "mix_pipeline.defs.runner.RunFailed"}


def test_one_name_per_stage(tmp_path):
    """Each asset is defined in defs/<asset>.py; a document stage runs in core/stages/<asset>.py; its
    checks are the quality checks of the stage of that name."""
    recipe = load_recipe(REPO / "recipes" / "demo.yaml", check_paths=False)
    defs = build_definitions(recipe)
    graph = defs.resolve_asset_graph()
    modules = {m.__name__.rsplit(".", 1)[1] for m in ASSET_MODULES}
    for key in graph.get_all_asset_keys():
        name = key.to_user_string()
        assert name in modules, name
        assert (PACKAGE / "defs" / f"{name}.py").exists()
        for check in graph.get(key).check_keys:
            assert CHECKS[check.name].stage == name, (name, check.name)
    for stage in {c.stage for c in CHECKS.values()}:
        assert (PACKAGE / "core" / "stages" / f"{stage}.py").exists(), stage


def test_the_demo_definitions_load_without_running_anything():
    recipe = load_recipe(REPO / "recipes" / "demo.yaml", check_paths=False)
    defs = build_definitions(recipe)
    dg.Definitions.validate_loadable(defs)
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"ingest", "build_dedup_index", "deduplicate", "mix", "compare_mixtures"} <= jobs
    assert {s.name for s in defs.sensors} >= {"pipeline", "drift"}


# Which package of core/ may import which: each one builds only on those below it. `io` is the floor;
# `stages` runs everything; `lab` trains proxies on what the stages publish. Top-level plain modules
# (recipe, names, layout, errors, arrays) are open to all.
CORE_EDGES = {
    "io": set(),
    "filters": {"io"},
    "dedup": {"io"},
    "gates": {"io", "filters"},
    "mixing": {"io", "filters"},
    "provenance": {"io", "filters", "gates", "mixing"},
    "stages": {"io", "filters", "dedup", "gates", "mixing", "provenance"},
    "lab": {"io", "filters", "dedup", "mixing", "provenance", "stages"},
}
MAX_MODULE_LINES = 60 * 10
MAX_FUNCTION_LINES = 60


def core_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[:2] == ["mix_pipeline", "core"] else None


def test_core_packages_build_only_on_those_below_them():
    assert {p.name for p in (PACKAGE / "core").iterdir() if (p / "__init__.py").exists()} == set(CORE_EDGES)
    offenders = []
    for module, targets in package_graph().items():
        here = core_package(module)
        for target in targets:
            there = core_package(target)
            if here and there and there != here and there not in CORE_EDGES[here]:
                offenders.append(f"{module} -> {target}")
            if target.startswith("mix_pipeline.sample") and module.startswith("mix_pipeline.core"):
                offenders.append(f"{module} -> {target} (the sample corpus is a fixture, not the pipeline)")
    assert offenders == []


def test_each_package_says_what_it_owns():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(REPO)} has no docstring"


def test_modules_and_functions_read_at_once():
    """No module over 600 lines and no function over 60 (decorators not counted)."""
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert long_modules == [] and long_functions == []


def test_no_comment_cites_an_issue_number():
    """Comments say why; an issue number says nothing to a reader of the code."""
    cited = re.compile(r"\bissues? #?\d+|\(#\d+\)", re.IGNORECASE)
    offenders = [f"{path.relative_to(REPO)}:{i}" for path in sorted(PACKAGE.rglob("*.py"))
                 for i, line in enumerate(path.read_text().splitlines(), 1) if cited.search(line)]
    assert offenders == []


def test_a_filter_name_is_spelled_in_the_registry_and_its_family_only():
    """Everyone else reads names from core/filters/registry.py. The few strings left that equal a filter
    name are other things with the same spelling (a metadata key, a card header, a ground-truth label)."""
    names = set(FILTER_NAMES) | {DECONTAMINATION}
    spelled = [f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}"
               for path in sorted(PACKAGE.rglob("*.py")) if "core/filters" not in path.as_posix()
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and node.value in names]
    assert len(spelled) <= 5, spelled
