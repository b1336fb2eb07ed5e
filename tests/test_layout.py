"""The package's layers: imports go one way, down (cli -> report/export/... -> search -> training ->
cost/data -> model -> space -> architecture -> backbone -> errors), and the command line answers
``--help`` and bad options without loading torch, Lightning or Optuna."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "optuna", "timm", "attention", "sqlalchemy", "matplotlib", "scipy")

# lower layers first; a module may import only modules of a lower rank (or of its own rank when they
# are siblings that do not import each other: the graph must also be acyclic)
LAYERS = [
    [
        "nas.core",
        "nas.measure",
        "nas.study",
        "nas.tasks",
        "nas.tasks.classify",
        "nas.core.errors",
        "nas.core.names",
        "nas.study.stores",
        "nas.core.stats",
        "nas.core.pareto",
        "nas.core.yamlio",
        "nas.search.signals",
        "nas.search.options",
        "nas.core.seeding",
        "nas.tasks.detect",
    ],
    ["nas.tasks.classify.backbone", "nas.tasks.detect.ultra", "nas.tasks.detect.data"],
    ["nas.core.architecture", "nas.tasks.detect.fit"],
    ["nas.core.space", "nas.tasks.detect.model"],
    ["nas.spacefile", "nas.core.artifacts"],
    ["nas.tasks.classify.model"],
    ["nas.measure.cost", "nas.tasks.classify.data"],
    ["nas.tasks.classify.fit", "nas.tasks.detect.train"],
    ["nas.study.storage", "nas.study.record"],
    ["nas.study.studies"],
    ["nas.search.locks", "nas.search.pruning", "nas.search.samplers", "nas.study.latency"],
    ["nas.search.confirm"],
    ["nas.search.trial"],
    ["nas.search.loop"],
    ["nas.search.workers", "nas.search"],
    ["nas.report", "nas.viz", "nas.finetune", "nas.check", "nas.tasks.detect.export"],
    ["nas.export", "nas.bench"],
    ["nas.cli.console", "nas.cli.base"],
    ["nas.cli.display"],
    [
        "nas.cli.mechanisms",
        "nas.cli.search",
        "nas.cli.report",
        "nas.cli.export",
        "nas.cli.train",
        "nas.cli.viz",
        "nas.cli.check",
        "nas.cli.bench",
    ],
    ["nas.cli"],
    ["nas", "nas.__main__"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: Path) -> set[str]:
    """The nas modules a file imports, anywhere in it (inside functions too, and type-only ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nas":
            subs = [f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")]
            found.update(subs or [node.module])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "nas")
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) - {module_name(p)} for p in sorted((ROOT / "nas").rglob("*.py"))}


def test_every_module_has_a_layer():
    assert sorted(set(graph()) - set(RANK)) == []


def test_imports_go_down_only_and_nothing_imports_the_command_line():
    g = graph()
    upward = [f"{a} -> {b}" for a, targets in g.items() for b in targets if RANK[b] > RANK[a]]
    assert upward == []
    into_cli = [
        f"{a} -> {b}"
        for a, targets in g.items()
        for b in targets
        if b.startswith("nas.cli") and not a.startswith(("nas.cli", "nas.__main__"))
    ]
    assert into_cli == []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:  # depth-first search for a cycle
        state[m] = 1
        for b in g.get(m, ()):
            assert state.get(b) != 1, f"import cycle: {' -> '.join(path + [m, b])}"
            if b not in state:
                visit(b, path + [m])
        state[m] = 2

    for m in g:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["search", "--help"],
        ["report", "--help"],
        ["bench", "latency", "--help"],
        ["search", "--space", "x.yaml", "--sampler", "bogus"],
        ["export", "--bogus"],
    ],
)
def test_help_and_bad_options_load_nothing_heavy(argv):
    code = (
        "import sys\nfrom nas.cli import main\nsys.argv = ['nas'] + sys.argv[1:]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules], code)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)
    last = [ln for ln in done.stdout.splitlines() if ln.startswith("HEAVY")][-1]
    assert last.startswith("HEAVY []"), f"{argv}: {last}\n{done.stderr[-2000:]}"
    assert last.endswith(" 0") == (argv[-1] == "--help"), last
