"""The package's layers are its folders: imports go one way, down (cli -> the commands' work at the top
level -> search -> study -> tasks -> measure -> core), no task imports another, nothing imports the
command line, and the command line answers ``--help`` and bad options without loading torch,
Lightning or Optuna."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "optuna", "timm", "attention", "sqlalchemy", "matplotlib", "scipy")

# the folders of nas/, lowest first; "" is nas/ itself (the commands' work: report, export, train, ...)
FOLDERS = ["core", "measure", "tasks", "study", "search", "", "cli"]
TOP = ("nas", "nas.__main__")  # the package's own lazy names and ``python -m nas``: above everything


def folder_of(module: str) -> str:
    parts = module.split(".")
    if module in TOP:
        return "top"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FOLDERS) else ""


def rank(module: str) -> int:
    return len(FOLDERS) if module in TOP else FOLDERS.index(folder_of(module))


def task_of(module: str) -> str | None:
    """The task folder a module belongs to (nas.tasks.<task>...), None outside them (nas.tasks' own
    modules, which may import the tasks: the registry, the space file's shell)."""
    parts = module.split(".")
    in_task = len(parts) > 2 and parts[1] == "tasks" and (ROOT / "nas" / "tasks" / parts[2]).is_dir()
    return parts[2] if in_task else None


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


def test_every_module_is_in_a_layer_folder():
    assert sorted(m for m in graph() if m not in TOP and folder_of(m) not in FOLDERS) == []


def test_imports_go_down_only_no_task_imports_another_and_nothing_imports_the_command_line():
    g = graph()
    upward = [f"{a} -> {b}" for a, targets in g.items() for b in targets if rank(b) > rank(a)]
    assert upward == []
    across = [
        f"{a} -> {b}"
        for a, targets in g.items()
        for b in targets
        if task_of(a) and task_of(b) and task_of(a) != task_of(b)
    ]
    assert across == []
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


def test_functions_are_short_enough_to_read_and_commands_only_parse_and_print():
    """No function in nas/ over 80 lines; none in nas/cli/ (which parses arguments, calls one function
    and prints its result) over 40."""
    long = []
    for path in sorted((ROOT / "nas").rglob("*.py")):
        limit = 40 if "cli" in path.relative_to(ROOT).parts else 80
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines (at most {limit})")
    assert long == []


def test_no_module_outside_the_tasks_asks_which_task_it_is():
    """Task-specific behaviour is a method of nas.core.task.Task: nothing outside nas/tasks/ compares a
    task's name or looks for a detector."""
    asking = []
    for path in sorted((ROOT / "nas").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1] == "tasks":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if any(s in line for s in ("is_detection", '== "detect"', '== "classify"', ".detector is not None")):
                asking.append(f"{rel}:{n}: {line.strip()}")
    assert asking == []
