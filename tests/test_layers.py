"""The package's architecture, checked from its source: imports only run down the layers below,
no import cycles (imports inside functions count), and no module over MAX_LINES lines.

Building the import graph from files (`module_files`, `import_graph`) is kept apart from checking
a graph (`find_cycles`, `layer_violations`), so the checks can be tested on a made-up graph."""

import ast
from pathlib import Path

PACKAGE = "inverse_graphics"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 350

# Lowest first. A module belongs to the first layer with a prefix equal to its dotted name or to
# a parent of it ("inverse_graphics.rendering" holds "inverse_graphics.rendering.renderer"); a
# package's __init__ has the package's name, so it sits in its package's layer. The package's
# own __init__ runs before any of its modules are imported, so it sits below every layer.
LAYERS = [
    ("utilities", ["inverse_graphics.files", "inverse_graphics.paths", "inverse_graphics.provenance", "inverse_graphics.timing",
                   "inverse_graphics.devices", "inverse_graphics.distributed",
                   "inverse_graphics.visualize"]),
    ("assets", ["inverse_graphics.resting", "inverse_graphics.assets"]),
    ("scene", ["inverse_graphics.camera", "inverse_graphics.table", "inverse_graphics.scene"]),
    ("rendering", ["inverse_graphics.rendering"]),
    ("data", ["inverse_graphics.data", "inverse_graphics.metrics"]),
    ("models", ["inverse_graphics.checkpoints", "inverse_graphics.training", "inverse_graphics.air", "inverse_graphics.supervised",
                "inverse_graphics.refine", "inverse_graphics.optimise"]),
    ("pipelines", ["inverse_graphics.robot"]),
    ("experiments", ["inverse_graphics.experiments"]),
    ("cli", ["inverse_graphics.demo", "inverse_graphics.cli_options", "inverse_graphics.cli_robot",
            "inverse_graphics.cli", "inverse_graphics.__main__"]),
]


# ---------------------------------------------------------------- the graph, from files


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under package_dir (a package's
    __init__.py is named after the package)."""
    files = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.with_suffix("").relative_to(package_dir.parent).parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def _imported_modules(module: str, is_package: bool, tree: ast.AST, modules) -> dict[str, int]:
    """The package modules `module` imports anywhere in `tree` (module level, in functions, under
    `if TYPE_CHECKING`), each with the line of its first import."""
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        # the deepest existing module: `import a.b.c` imports a.b.c (a and a.b are its parents)
        parts = name.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        target = ".".join(parts)
        if parts and target != module:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # `from pkg import name`: the module pkg.name if there is one, else pkg itself
                add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source, node.lineno)
    return found


def import_graph(files: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Module -> {package module it imports: line of the first such import}; every module is a key."""
    return {module: _imported_modules(module, path.name == "__init__.py", ast.parse(path.read_text(), str(path)),
                                      files)
            for module, path in files.items()}


# ---------------------------------------------------------------- the checks, on a graph


def layer_of(module: str, layers=LAYERS, package: str = PACKAGE):
    """(index, name) of the module's layer, (-1, "package root") for the package's __init__, or None."""
    if module == package:
        return -1, "package root"
    for index, (name, prefixes) in enumerate(layers):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index, name
    return None


def find_cycles(graph) -> list[list[str]]:
    """One import cycle, as a closed path [a, b, ..., a], per strongly connected group of modules."""
    nodes = sorted(set(graph) | {v for targets in graph.values() for v in targets})
    edges = {u: sorted(v for v in graph.get(u, ()) if v != u) for u in nodes}
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def connect(u):  # Tarjan's strongly connected components
        index[u] = low[u] = len(index)
        stack.append(u)
        on_stack.add(u)
        for v in edges[u]:
            if v not in index:
                connect(v)
                low[u] = min(low[u], low[v])
            elif v in on_stack:
                low[u] = min(low[u], index[v])
        if low[u] == index[u]:
            group = []
            while True:
                v = stack.pop()
                on_stack.discard(v)
                group.append(v)
                if v == u:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for u in nodes:
        if u not in index:
            connect(u)
    cycles = []
    for group in groups:  # breadth first inside the group: the shortest way from its first module back to it
        start = min(group)
        parent, frontier, found = {start: None}, [start], None
        while found is None:
            nxt = []
            for u in frontier:
                if start in edges[u]:
                    found = u
                    break
                for v in edges[u]:
                    if v in group and v not in parent:
                        parent[v] = u
                        nxt.append(v)
            frontier = nxt
        path = [found]
        while parent[path[-1]] is not None:
            path.append(parent[path[-1]])
        cycles.append(path[::-1] + [start])
    return sorted(cycles)


def layer_violations(graph, layers=LAYERS, package: str = PACKAGE) -> list[str]:
    """Modules in no layer, and imports from a lower layer up to a higher one, one line each."""
    problems = []
    nodes = sorted(set(graph) | {v for targets in graph.values() for v in targets})
    for module in nodes:
        if layer_of(module, layers, package) is None:
            problems.append(f"{module} is in no layer: add it to a layer in LAYERS")
    for importer in sorted(graph):
        low = layer_of(importer, layers, package)
        for imported in sorted(graph[importer]):
            high = layer_of(imported, layers, package)
            if low is not None and high is not None and high[0] > low[0]:
                line = graph[importer].get(imported) if isinstance(graph[importer], dict) else None
                where = f" (line {line})" if line else ""
                problems.append(f"{importer} (layer {low[0]} {low[1]}) imports {imported} "
                                f"(layer {high[0]} {high[1]}){where}")
    return problems


def long_modules(files: dict[str, Path], max_lines: int = MAX_LINES) -> list[str]:
    lengths = {module: len(path.read_text().splitlines()) for module, path in files.items()}
    return [f"{module}: {n} lines" for module, n in sorted(lengths.items(), key=lambda kv: -kv[1]) if n > max_lines]


# ---------------------------------------------------------------- the tests


def test_no_import_cycles():
    graph = import_graph(module_files(PACKAGE_DIR))
    cycles = find_cycles(graph)
    # each step names the line of the importing module that imports the next one
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}" for c in cycles)


def test_imports_only_run_down_the_layers():
    problems = layer_violations(import_graph(module_files(PACKAGE_DIR)))
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_no_module_is_over_the_line_limit():
    over = long_modules(module_files(PACKAGE_DIR))
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(over)


def test_the_checks_report_what_they_should():
    """The checker itself can fail: a made-up graph with a cycle, an upward import and an unplaced module."""
    layers = [("low", ["p.low"]), ("high", ["p.high", "p.top"])]
    graph = {
        "p": {},
        "p.low": {},
        "p.low.a": {"p.low.b": 3, "p": 4},
        "p.low.b": {"p.low.a": 5, "p.high.x": 6},  # cycle a <-> b, and an upward import
        "p.low.c": {},
        "p.high.x": {"p.low.c": 2, "p.top": 2},  # downward and same-layer imports are fine
        "p.top": {"p.low": 1},
        "p.stray": set(),
    }
    assert find_cycles(graph) == [["p.low.a", "p.low.b", "p.low.a"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"c"}}) == []
    assert layer_violations(graph, layers, package="p") == [
        "p.stray is in no layer: add it to a layer in LAYERS",
        "p.low.b (layer 0 low) imports p.high.x (layer 1 high) (line 6)",
    ]
    assert layer_of("p.lowly", layers, "p") is None  # prefixes match whole dotted names only
    assert layer_of("p.low", layers, "p") == (0, "low") and layer_of("p.top.z", layers, "p") == (1, "high")


def test_the_graph_resolves_relative_and_function_level_imports(tmp_path):
    package = tmp_path / "pkg"
    for name, text in {
        "__init__.py": "",
        "scene.py": "import os\n",
        "sub/__init__.py": "from . import leaf\n",
        "sub/leaf.py": "from ..scene import X\n",
        "sub/user.py": "def f():\n    from . import leaf, helper\n    from pkg.scene import Y\n    import pkg.sub\n",
        "big.py": "x = 1\n" * (MAX_LINES + 1),
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    files = module_files(package)
    assert set(files) == {"pkg", "pkg.scene", "pkg.sub", "pkg.sub.leaf", "pkg.sub.user", "pkg.big"}
    graph = import_graph(files)
    assert graph["pkg.sub"] == {"pkg.sub.leaf": 1}
    assert graph["pkg.sub.leaf"] == {"pkg.scene": 1}
    # `helper` is no module: `from . import helper` imports the package pkg.sub
    assert graph["pkg.sub.user"] == {"pkg.sub.leaf": 2, "pkg.sub": 2, "pkg.scene": 3}
    assert graph["pkg.scene"] == {} and graph["pkg.big"] == {}
    assert long_modules(files) == [f"pkg.big: {MAX_LINES + 1} lines"]
