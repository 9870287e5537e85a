"""The package's layers: each subpackage imports only from the layers below it, and no import cycle exists.

The order (``docs/design.md``): ``_runtime`` < ``nn`` < ``symbol`` < ``data`` < ``export`` < ``train``, ``serve``
< ``bench`` < ``cli``. ``train`` and ``serve`` stand side by side: neither imports the other. Imports are read
from the source with :mod:`ast` (top-level and inside functions alike), so nothing here imports the package.
An import inside a function is allowed for a heavy or optional third-party dependency (:data:`LAZY_OK`), or
where the line says why (``# lazy: ...``); everything else is imported at the top of its module.
"""
import ast
import os
import textwrap
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Each layer's rank: a module may import its own layer and the ones of lower rank.
LAYERS = {"_runtime": 0, "nn": 1, "symbol": 2, "data": 3, "export": 4, "train": 5, "serve": 5, "bench": 6,
          "cli": 7}

#: Third-party modules that may be imported inside a function: heavy, or optional for the package's users.
LAZY_OK = {"onnx", "onnxruntime", "openvino", "starlette", "uvicorn", "multipart", "python_multipart",
           "prometheus_client", "matplotlib", "torch", "torchvision", "gluoncv", "mlxtend", "tqdm", "PIL",
           "dmlc_tracker", "psutil", "selenium", "scipy", "sympy", "cpuinfo", "mxnet", "concurrent",
           "threadpoolctl", "ml_dtypes"}


def package_files(root: str = ROOT) -> Dict[str, str]:
    """``{module name: path}`` of stn_gluon's modules (``symbol/`` installs as ``stn_gluon.symbol``)."""
    files = {}
    for top, name in (("stn_gluon", "stn_gluon"), ("symbol", "stn_gluon.symbol")):
        for folder, _, names in os.walk(os.path.join(root, top)):
            for f in names:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), os.path.join(root, top))[:-3]
                    parts = [p for p in rel.split(os.sep) if p != "__init__"]
                    files[".".join([name] + parts)] = os.path.join(folder, f)
    return files


def layer_of(module: str) -> Optional[str]:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def imports_of(module: str, path: str, known: Set[str]) -> List[Tuple[str, int, bool, str]]:
    """``(imported stn_gluon module or third-party top name, line, inside a function, source line)``."""
    source = open(path).read()
    lines = source.splitlines()
    is_pkg = path.endswith("__init__.py")
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # typing-only imports run nowhere
            targets: List[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")[: len(module.split(".")) - child.level + (1 if is_pkg else 0)]
                    stem = ".".join(base + ([child.module] if child.module else []))
                else:
                    stem = child.module or ""
                submodules = [f"{stem}.{a.name}" for a in child.names if f"{stem}.{a.name}" in known]
                targets = submodules or [stem]  # `from . import x`: the module x (its package loads too)
            for t in targets:
                own = t if t in known else None
                if own is None and t.startswith("stn_gluon"):
                    own = max((k for k in known if t.startswith(k + ".") or t == k), key=len, default=None)
                found.append((own or t.split(".")[0], child.lineno, in_function, lines[child.lineno - 1]))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def problems(root: str = ROOT) -> List[str]:
    """Every upward import, import cycle and unexplained function-level import under ``root``."""
    files = package_files(root)
    known = set(files)
    graph: Dict[str, Set[str]] = {m: set() for m in files}
    found = []
    for module, path in sorted(files.items()):
        here = layer_of(module)
        for target, line, in_function, text in imports_of(module, path, known):
            where = f"{os.path.relpath(path, root)}:{line}"
            if target in known:
                if target != module and not module.startswith(target + "."):  # a package's own __init__
                    graph[module].add(target)
                there = layer_of(target)
                if here and there and there != here and LAYERS[there] >= LAYERS[here]:
                    found.append(f"{where}: {here} imports {target} ({there} is not below {here})")
                if in_function and "# lazy:" not in text:
                    found.append(f"{where}: {target} imported inside a function without a '# lazy:' reason")
            elif in_function and target.split(".")[0] not in LAZY_OK and "# lazy:" not in text:
                found.append(f"{where}: {target} imported inside a function (not a heavy optional dependency)")
    found += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return found


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_package_keeps_its_layers():
    found = problems()
    assert not found, "\n".join(found)


def _plant(tmp_path, files: Dict[str, str]) -> str:
    root = tmp_path / "tree"
    for rel, text in {"stn_gluon/__init__.py": "", "symbol/__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return str(root)


@pytest.mark.parametrize("files, expected", [
    ({"stn_gluon/nn/__init__.py": "", "stn_gluon/nn/ops.py": "from ..train import gluon\n",
      "stn_gluon/train/__init__.py": "", "stn_gluon/train/gluon.py": ""}, "nn imports stn_gluon.train.gluon"),
    ({"stn_gluon/train/__init__.py": "", "stn_gluon/train/a.py": "from . import b\n",
      "stn_gluon/train/b.py": "from .a import x\n"}, "import cycle: stn_gluon.train.a -> stn_gluon.train.b"),
    ({"stn_gluon/serve/__init__.py": "", "stn_gluon/serve/app.py": "from ..train import gluon\n",
      "stn_gluon/train/__init__.py": "", "stn_gluon/train/gluon.py": ""}, "serve imports stn_gluon.train.gluon"),
    ({"stn_gluon/nn/__init__.py": "", "stn_gluon/nn/ops.py": "def f():\n    from . import blocks\n",
      "stn_gluon/nn/blocks.py": ""}, "imported inside a function without a '# lazy:' reason"),
    ({"stn_gluon/nn/__init__.py": "", "stn_gluon/nn/ops.py": "def f():\n    import json\n    import onnx\n"},
     "json imported inside a function"),
])
def test_a_planted_violation_is_found(tmp_path, files, expected):
    found = problems(_plant(tmp_path, files))
    assert any(expected in p for p in found), found
    assert len(found) == 1, found  # and nothing else: the checker names what is wrong, once


def test_a_clean_tree_passes(tmp_path):
    root = _plant(tmp_path, {"stn_gluon/nn/__init__.py": "", "stn_gluon/nn/ops.py": "import numpy\n",
                             "stn_gluon/train/__init__.py": "",
                             "stn_gluon/train/gluon.py": "from ..nn import ops\n"
                                                         "def f():\n    from . import x  # lazy: a reason\n",
                             "stn_gluon/train/x.py": ""})
    assert problems(root) == []


#: The longest a function of the library may be, in lines (its docstring included): one screen.
MAX_FUNCTION_LINES = 60


def long_functions(root: str = ROOT) -> List[str]:
    """``path:line name (N lines)`` for every function or method longer than :data:`MAX_FUNCTION_LINES`."""
    found = []
    for path in sorted(package_files(root).values()):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{os.path.relpath(path, root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_a_screen():
    found = long_functions()
    assert not found, "\n".join(found)


def test_a_long_function_is_found(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    root = _plant(tmp_path, {"stn_gluon/nn/__init__.py": "", "stn_gluon/nn/ops.py": f"def long():\n{body}"
                                                                                  f"def short():\n    pass\n"})
    assert long_functions(root) == [f"stn_gluon/nn/ops.py:1 long ({MAX_FUNCTION_LINES + 1} lines)"]
