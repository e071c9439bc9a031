"""The package's reading order holds: every import points down the floors, lazy and
type-checking imports included; ``engine/`` never imports ``policies``; no file is over 400
lines; no circle between modules. Read from the source with ``ast`` (nothing is imported).

Floors, bottom to top (the README's architecture section lists the same):
``layout → stats → plan → policies → surgery → core``, with the small leaf modules (errors,
io, layer kinds, neuron IDs) below and the users of the core (schedule, weights, checkpoint,
report, CLI) above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "policies")

FLOORS: list[tuple[str, ...]] = [
    ("engine._version", "engine.errors", "engine.io"),
    ("engine.layers", "engine.checkpoint_factories"),
    ("engine.layout", "engine.neurons"),
    ("engine.stats", "engine.selection"),
    ("engine.observe", "engine.history", "engine.plan"),
    ("engine.planning", "engine.preview"),
    ("policies",),
    ("engine.surgery", "engine.dynamics", "engine.tracked", "engine.sparsity"),
    ("engine.distributed",),
    ("engine.engine_surgery", "engine.forking"),
    ("engine.core",),
    (
        "engine.schedule",
        "engine.weights",
        "engine.checkpoint",
        "engine.report",
        "engine.data",
        "engine.sampling",
    ),
    ("engine.dashboard",),  # reads run folders through weights/dynamics/history; never the core
    ("engine.integrations",),  # Lightning, Hugging Face, TensorBoard: users of the schedule
    ("engine.cli",),
    ("engine.__main__", "engine"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts).removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def floor_of(module: str) -> tuple[int, str]:
    """(floor, room): the room is the floor entry the module belongs to."""
    best = None
    for level, rooms in enumerate(FLOORS):
        for room in rooms:
            inside = module == room or (room != "engine" and module.startswith(room + "."))
            if inside and (best is None or len(room) > len(best[1])):
                best = (level, room)
    if best is None:
        raise AssertionError(f"{module} has no floor: add it to FLOORS (and the README)")
    return best


def imports_of(path: Path, module: str) -> set[str]:
    """Every project module ``path`` imports, at any depth of the file (lazy imports inside
    functions and ``if TYPE_CHECKING:`` blocks included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {m: imports_of(p, m) for m, p in MODULES.items()}


def test_every_module_has_a_floor():
    for module in MODULES:
        floor_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    level, room = floor_of(module)
    upward = []
    for target in sorted(GRAPH[module]):
        their_level, their_room = floor_of(target)
        if their_room == room:
            continue  # within one room: the circle test below keeps it acyclic
        if their_level >= level:
            upward.append(f"{target} (floor {their_level}, {their_room})")
    assert not upward, f"{module} (floor {level}, {room}) imports upward: {upward}"


def test_engine_never_imports_policies():
    offenders = {
        m: sorted(t for t in GRAPH[m] if t.split(".")[0] == "policies")
        for m in MODULES
        if m.split(".")[0] == "engine"
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_no_import_circle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert circles == []


def test_files_stay_small():
    long = {
        str(p.relative_to(ROOT)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def test_layout_is_one_package():
    assert not list((ROOT / "engine").glob("layout*.py"))
    assert (ROOT / "engine" / "layout" / "__init__.py").is_file()


def test_the_checker_sees_an_upward_import(tmp_path):
    """The floors test can fail: a lazy import of the core from the layout is caught."""
    fake = tmp_path / "engine" / "layout" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from engine.core import NeuronEngine\n")
    found = imports_of(fake, "engine.layout.fake")
    assert "engine.core" in found
    assert floor_of("engine.core")[0] > floor_of("engine.layout.fake")[0]
