"""The package's imports flow one way: a walk over every module's imports (also those inside
functions, not those under ``if TYPE_CHECKING:``) fails on a cycle or on an upward import."""

from __future__ import annotations

import ast
from pathlib import Path

import loopml

PACKAGE = Path(loopml.__file__).parent

# Bottom to top. A module may import its own layer or any layer below it; ``serving``,
# ``control`` and ``monitoring`` share a layer but see each other only through the package's
# public names (its ``__init__``), never its internals.
LAYERS: list[set[str]] = [
    {"errors", "_time", "codeversion", "cliutil"},
    {"config"},
    {"store"},
    {"routing", "tracking", "data", "recipes"},
    {"registry"},
    {"pipeline"},
    {"batch", "labels"},
    {"serving", "control", "monitoring"},
    {"cli", "demo", "__main__", "__init__"},
]
PEERS = {"serving", "control", "monitoring"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path) -> set[str]:
    """Every ``loopml.*`` module that ``path`` imports at run time."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("loopml")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("loopml"):
            # ``from loopml import control`` names a module, not an attribute of ``loopml``
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _is_module(sub) else node.module)
    return found


def graph() -> dict[str, set[str]]:
    """module -> the loopml modules it imports."""
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(component: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if component in layer:
            return rank
    raise AssertionError(f"loopml.{component} is in no layer: add it to LAYERS")


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among modules (package imports count as importing the package's
    ``__init__`` only), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt == node:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def components(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between top-level parts of the package (``loopml.control``, ...)."""
    out: dict[str, set[str]] = {}
    for module, imported in edges.items():
        here = _component(module)
        out.setdefault(here, set()).update(_component(t) for t in imported if t != "loopml")
    return out


def test_no_import_cycle() -> None:
    edges = graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle between modules: " + " -> ".join(cycle or [])
    cycle = find_cycle(components(edges))
    assert cycle is None, "import cycle between parts of loopml: " + " -> ".join(cycle or [])


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for module, imported in graph().items():
        here = _component(module)
        for target in imported:
            there = _component(target)
            if here == there:
                continue
            if _rank(there) > _rank(here):
                wrong.append(f"{module} imports {target} (a higher layer)")
            elif there in PEERS and here in PEERS and target != f"loopml.{there}":
                wrong.append(f"{module} imports {target}: use loopml.{there}'s public names")
    assert not wrong, "\n".join(wrong)


def test_the_checks_catch_what_they_should() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert _rank("errors") < _rank("store") < _rank("registry") < _rank("control") < _rank("cli")
