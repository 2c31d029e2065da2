"""The package's shape, read from the source (ast, nothing imported): no import cycle (imports inside
functions count), no module over 700 lines, few function-level imports between its own modules, no
private name used across modules, and each layer importing only from the layers below it
(docs/architecture.md). ``python tests/test_architecture.py`` prints the figures."""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
#: installed package name -> source folder (pyproject's package-dir)
SOURCES = {"edgepass": ROOT / "edgepass", "edgepass.passes": ROOT / "passes",
           "edgepass.predictors": ROOT / "predictors"}
MAX_LINES = 700
MAX_FUNCTION_IMPORTS = 40

#: the layers, bottom first: a module may import from its own layer and the ones below, never above.
#: A module is in the layer of its longest matching prefix.
LAYERS = [
    ("utilities", ["edgepass.errors", "edgepass.fileio", "edgepass.util", "edgepass.tasks"]),
    ("ir", ["edgepass.ir", "edgepass.frontends", "edgepass.api", "edgepass.calibration"]),
    ("space", ["edgepass.space", "edgepass.coupling", "edgepass.knob_tables"]),
    ("zoo", ["edgepass.zoo"]),
    ("devices", ["edgepass.devices"]),
    ("dataset", ["edgepass.dataset"]),
    # the accuracy predictor measures rewritten models: the passes sit below the predictors
    ("passes", ["edgepass.passes", "edgepass.rewrite", "edgepass.export"]),
    ("predictors", ["edgepass.predictors"]),
    ("optimizers", ["edgepass.optimizers", "edgepass.zoo.spaces"]),
    ("compile", ["edgepass.compile_options", "edgepass.report", "edgepass.build_cache", "edgepass.selection",
                 "edgepass.plot", "edgepass.stages", "edgepass.executors", "edgepass.ray_executor", "edgepass.fleet",
                 "edgepass.campaign", "edgepass.baselines", "edgepass.demo", "edgepass.compile", "edgepass.predict"]),
    ("cli", ["edgepass.commands", "edgepass.cli", "edgepass.__main__"]),
    ("package", ["edgepass"]),
]


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    lines: int
    tree: ast.Module


@dataclass
class Import:
    source: str        # importing module
    target: str        # imported module of the package
    names: list        # names taken from it (``from x import a, b``), [] for ``import x``
    function_level: bool
    line: int
    type_checking: bool = False


@dataclass
class Scan:
    modules: dict = field(default_factory=dict)
    imports: list = field(default_factory=list)
    private_uses: list = field(default_factory=list)   # (module, line, "target._name")


def module_name(package: str, folder: Path, path: Path) -> str:
    rel = path.relative_to(folder).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def load_modules() -> dict:
    modules = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            name = module_name(package, folder, path)
            text = path.read_text()
            modules[name] = Module(name, path, path.name == "__init__.py", len(text.splitlines()),
                                   ast.parse(text, str(path)))
    return modules


def _resolve(mod: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.name.split(".")
    if not mod.is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Visitor(ast.NodeVisitor):
    def __init__(self, mod: Module, modules: dict, scan: Scan):
        self.mod, self.modules, self.scan = mod, modules, scan
        self.depth = 0
        self.type_checking = False
        self.aliases: dict = {}     # local name -> package module it names

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node):
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self.type_checking = True
            for n in node.body:
                self.visit(n)
            self.type_checking = False
            for n in node.orelse:
                self.visit(n)
        else:
            self.generic_visit(node)

    def _add(self, target: str, names: list, line: int):
        self.scan.imports.append(Import(self.mod.name, target, names, self.depth > 0, line, self.type_checking))

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name in self.modules:
                self._add(alias.name, [], node.lineno)
                if alias.asname:
                    self.aliases[alias.asname] = alias.name

    def visit_ImportFrom(self, node):
        base = _resolve(self.mod, node)
        if base not in self.modules:
            return
        plain = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in self.modules:
                self._add(sub, [], node.lineno)
                self.aliases[alias.asname or alias.name] = sub
            else:
                plain.append(alias.name)
                if alias.name.startswith("_") and not alias.name.startswith("__") and base != self.mod.name:
                    self.scan.private_uses.append((self.mod.name, node.lineno, f"{base}.{alias.name}"))
        if plain or not node.names:
            self._add(base, plain, node.lineno)

    def visit_Attribute(self, node):
        # ``module._private`` through a name bound to one of the package's modules
        if isinstance(node.value, ast.Name) and node.value.id in self.aliases and node.attr.startswith("_") \
                and not node.attr.startswith("__") and self.aliases[node.value.id] != self.mod.name:
            self.scan.private_uses.append((self.mod.name, node.lineno, f"{self.aliases[node.value.id]}.{node.attr}"))
        self.generic_visit(node)


def scan_package() -> Scan:
    scan = Scan(load_modules())
    for mod in scan.modules.values():
        _Visitor(mod, scan.modules, scan).visit(mod.tree)
    return scan


def import_graph(scan: Scan) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(scan.modules)
    for imp in scan.imports:
        if not imp.type_checking and imp.source != imp.target:
            g.add_edge(imp.source, imp.target)
    return g


def layer_of(name: str) -> int:
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, index = len(p), i
    return index


def layer_violations(scan: Scan) -> list:
    out = []
    for imp in scan.imports:
        if imp.type_checking:
            continue
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if dst > src:
            out.append(f"{imp.source}:{imp.line} ({LAYERS[src][0]}) imports {imp.target} ({LAYERS[dst][0]})")
    return out


def function_imports(scan: Scan) -> list:
    return [i for i in scan.imports if i.function_level and not i.type_checking]


# -- the tests ------------------------------------------------------------------------------------

SCAN = scan_package()


def test_no_import_cycles():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph(SCAN)) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_over_max_lines():
    big = {m.name: m.lines for m in SCAN.modules.values() if m.lines > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_few_function_level_imports():
    found = function_imports(SCAN)
    assert len(found) <= MAX_FUNCTION_IMPORTS, \
        f"{len(found)} function-level imports between the package's modules (at most {MAX_FUNCTION_IMPORTS}): " + \
        ", ".join(f"{i.source}:{i.line}->{i.target}" for i in found)


def test_function_level_imports_say_why():
    """Each import left inside a function carries a one-line reason (a comment on its line or above)."""
    missing = []
    for imp in function_imports(SCAN):
        lines = SCAN.modules[imp.source].path.read_text().splitlines()
        i = imp.line - 1
        while i > 0 and lines[i - 1].strip().startswith(("from ", "import ")):   # a block of lazy imports
            i -= 1
        if "#" not in lines[imp.line - 1] and not (i > 0 and lines[i - 1].strip().startswith("#")):
            missing.append(f"{imp.source}:{imp.line}")
    assert not missing, f"function-level imports without a reason: {missing}"


def test_no_private_names_across_modules():
    assert not SCAN.private_uses, f"private names used across modules: {SCAN.private_uses}"


def test_layers_import_only_downwards():
    assert all(layer_of(m) is not None for m in SCAN.modules), \
        f"modules in no layer: {[m for m in SCAN.modules if layer_of(m) is None]}"
    bad = layer_violations(SCAN)
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_tests_use_no_private_names():
    """Tests go through public names too (a private name may change without notice)."""
    modules = SCAN.modules
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                for a in node.names:
                    if f"{node.module}.{a.name}" in modules:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                    elif a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in modules and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                dotted = []
                while isinstance(base, ast.Attribute):
                    dotted.insert(0, base.attr)
                    base = base.value
                if isinstance(base, ast.Name):
                    name = ".".join([aliases.get(base.id, base.id), *dotted])
                    if name in modules:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}.{node.attr}")
    assert not found, "tests use private names: " + ", ".join(found)


def summary() -> str:
    g = import_graph(SCAN)
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    fn = function_imports(SCAN)
    big = sorted(((m.lines, m.name) for m in SCAN.modules.values() if m.lines > MAX_LINES), reverse=True)
    lines = [f"modules: {len(SCAN.modules)}",
             f"import cycles: {len(cycles)} " + "; ".join(f"{len(c)}: {c}" for c in cycles),
             f"function-level imports between the package's modules: {len(fn)}",
             f"modules over {MAX_LINES} lines: {big}",
             f"private names across modules: {len(SCAN.private_uses)} {SCAN.private_uses}",
             "layer violations: " + str(len(layer_violations(SCAN)))]
    lines += ["  " + v for v in layer_violations(SCAN)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())
    if "-v" in sys.argv:
        for i in function_imports(SCAN):
            print(f"  fn {i.source}:{i.line} -> {i.target} {i.names}")
