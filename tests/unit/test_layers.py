# -*- coding: utf-8 -*-
"""The layers of ``plugins/`` hold: every import points down or sideways, none in a cycle, Ansible only at the edge.

The table is the repository's own (``plugins/module_utils/_engine/layers.py``). Every
``import`` and ``from ... import`` of every file is read with ``ast``, wherever it stands:
at the top, inside a function, under ``if TYPE_CHECKING``. Nothing here imports the code
it checks, so a file that would not even import is still judged.
"""

from __future__ import annotations

import ast
import os
import textwrap
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = os.path.join(REPO, "plugins")
TABLE = os.path.join(PLUGINS, "module_utils", "_engine", "layers.py")
PACKAGE = "ansible_collections.ovz.containers.plugins"

Layers = Sequence[Tuple[str, Sequence[str]]]


def read_table(path: str = TABLE) -> Tuple[Layers, Sequence[str]]:
    """``LAYERS`` and ``ANSIBLE_IMPORTERS`` of the table file, read as literals (not imported)."""
    values = {}
    with open(path) as handle:
        for node in ast.parse(handle.read()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    return values["LAYERS"], values["ANSIBLE_IMPORTERS"]


def python_files(root: str) -> List[str]:
    """Every .py file under ``root``, relative to it, with ``/``."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.relpath(os.path.join(directory, f), root).replace(os.sep, "/") for f in files if f.endswith(".py")]
    return sorted(found)


def _within(path: str, entries: Sequence[str]) -> bool:
    return any(path == entry or path.startswith(entry.rstrip("/") + "/") for entry in entries)


def layer_of(path: str, layers: Layers) -> Optional[int]:
    """The index of the layer that holds ``path`` (the longest matching entry wins), or None."""
    best: Optional[Tuple[int, int]] = None
    for index, (_name, entries) in enumerate(layers):
        for entry in entries:
            if _within(path, [entry]) and (best is None or len(entry) > best[1]):
                best = (index, len(entry))
    return best[0] if best else None


def _module_path(dotted: str, files: Set[str]) -> Optional[str]:
    """The file (relative to plugins/) of a dotted name below ``plugins``, or None if there is none."""
    base = dotted.replace(".", "/")
    for candidate in (base + ".py", base + "/__init__.py"):
        if candidate in files:
            return candidate
    return None


def imports_of(path: str, source: str, files: Set[str]) -> Tuple[List[Tuple[str, int]], List[Tuple[str, int]]]:
    """(files under plugins/ that ``path`` imports, ``ansible`` modules it imports), each with its line.

    Relative imports resolve against the file's own package; ``from package import name``
    counts as an import of the module ``name`` where there is one, else of the package.
    """
    own = path[:-3].split("/")
    package = own[:-1] if own[-1] != "__init__" else own[:-1]
    local: List[Tuple[str, int]] = []
    ansible: List[Tuple[str, int]] = []

    def add(dotted: str, names: Sequence[str], line: int) -> None:
        if dotted == "ansible" or dotted.startswith("ansible."):
            ansible.append((dotted, line))
            return
        prefix = PACKAGE + "."
        if not dotted.startswith(prefix):
            return
        below = dotted[len(prefix):]
        targets = [_module_path(below + "." + name, files) for name in names]
        if names and all(targets):
            local.extend((target, line) for target in targets if target)
        else:
            target = _module_path(below, files)
            if target:
                local.append((target, line))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, [], node.lineno)
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names if alias.name != "*"]
            if node.level:
                parts = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                if node.level - 1 > len(package):
                    continue
                dotted = ".".join([PACKAGE] + parts + ([node.module] if node.module else []))
            else:
                dotted = node.module or ""
            add(dotted, names, node.lineno)
    return local, ansible


def check(root: str, layers: Layers, ansible_importers: Sequence[str]) -> List[str]:
    """Every breach of the layer rules in the .py files under ``root`` (a ``plugins/`` tree), as sentences."""
    files = python_files(root)
    known = set(files)
    problems: List[str] = []
    graph: Dict[str, Set[str]] = {path: set() for path in files}
    names = [name for name, _entries in layers]
    for path in files:
        mine = layer_of(path, layers)
        if mine is None:
            problems.append("%s is in no layer of the table" % path)
            continue
        with open(os.path.join(root, path)) as handle:
            local, ansible = imports_of(path, handle.read(), known)
        for target, line in local:
            if target == path:
                continue
            graph[path].add(target)
            theirs = layer_of(target, layers)
            if theirs is not None and theirs > mine:
                problems.append("%s:%d (%s) imports %s (%s): an import up a layer"
                                % (path, line, names[mine], target, names[theirs]))
        if ansible and not _within(path, ansible_importers):
            for module, line in ansible:
                problems.append("%s:%d imports %s: only %s may import Ansible"
                                % (path, line, module, ", ".join(ansible_importers)))
    for cycle in cycles(graph):
        problems.append("an import cycle: %s" % " -> ".join(cycle + [cycle[0]]))
    return problems


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one file (or a file importing itself), each as a
    path through its files (Tarjan's algorithm, iteratively)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(_path_through(sorted(component), graph))
    return found


def _path_through(component: List[str], graph: Dict[str, Set[str]]) -> List[str]:
    """A cycle through the first file of ``component``, following imports inside it (breadth first)."""
    members = set(component)
    start = component[0]
    previous: Dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return component


# ---------------------------------------------------------------------------------------------
# the repository
# ---------------------------------------------------------------------------------------------

def test_the_plugins_keep_their_layers():
    layers, ansible_importers = read_table()
    assert check(PLUGINS, layers, ansible_importers) == []


def test_every_engine_directory_is_a_layer_of_its_own():
    """A new sub-package of the engine needs its place in the table, not a silent home in a bigger one."""
    layers, _ansible = read_table()
    engine = os.path.join(PLUGINS, "module_utils", "_engine")
    named = {entry for _name, entries in layers for entry in entries}
    for directory in sorted(os.listdir(engine)):
        if os.path.isdir(os.path.join(engine, directory)) and directory != "__pycache__":
            assert "module_utils/_engine/" + directory in named, directory


# ---------------------------------------------------------------------------------------------
# the checker itself, on planted trees
# ---------------------------------------------------------------------------------------------

TOY_LAYERS = (("low", ("module_utils/_engine/low",)), ("high", ("module_utils/_engine/high",)),
              ("edge", ("module_utils/_ansible", "modules")))
TOY_ANSIBLE = ("module_utils/_ansible", "modules")


def plant(root, files):
    for path, text in files.items():
        full = root / "plugins" / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(textwrap.dedent(text))
    return str(root / "plugins")


def test_a_clean_tree_passes(tmp_path):
    root = plant(tmp_path, {
        "module_utils/_engine/low/a.py": "import os\n",
        "module_utils/_engine/high/b.py": "from ..low import a\nfrom ..low.a import os\n",
        "module_utils/_ansible/glue.py": "from ansible.module_utils.basic import AnsibleModule\nfrom .._engine.high import b\n",
        "modules/m.py": "from ansible_collections.ovz.containers.plugins.module_utils._engine.high.b import a\n",
    })
    assert check(root, TOY_LAYERS, TOY_ANSIBLE) == []


@pytest.mark.parametrize("where", ["top", "function", "type_checking"])
def test_an_upward_import_fails_naming_both_files(tmp_path, where):
    body = {
        "top": "from ..high import b\n",
        "function": "def f():\n    from ..high.b import thing\n    return thing\n",
        "type_checking": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..high import b\n",
    }[where]
    root = plant(tmp_path, {"module_utils/_engine/low/a.py": body, "module_utils/_engine/high/b.py": "thing = 1\n"})
    problems = check(root, TOY_LAYERS, TOY_ANSIBLE)
    assert len(problems) == 1, problems
    assert "module_utils/_engine/low/a.py" in problems[0] and "module_utils/_engine/high/b.py" in problems[0]
    assert "up a layer" in problems[0]


def test_a_cycle_inside_one_layer_fails_naming_its_files(tmp_path):
    root = plant(tmp_path, {
        "module_utils/_engine/low/a.py": "from . import b\n",
        "module_utils/_engine/low/b.py": "def f():\n    from .c import x\n    return x\n",
        "module_utils/_engine/low/c.py": "from .a import y\nx = 1\n",
    })
    problems = check(root, TOY_LAYERS, TOY_ANSIBLE)
    assert problems == ["an import cycle: module_utils/_engine/low/a.py -> module_utils/_engine/low/b.py -> "
                        "module_utils/_engine/low/c.py -> module_utils/_engine/low/a.py"]


def test_ansible_outside_the_edge_fails(tmp_path):
    root = plant(tmp_path, {"module_utils/_engine/low/a.py": "def f():\n    import ansible.module_utils.basic\n"})
    problems = check(root, TOY_LAYERS, TOY_ANSIBLE)
    assert problems == ["module_utils/_engine/low/a.py:2 imports ansible.module_utils.basic: only "
                        "module_utils/_ansible, modules may import Ansible"]


def test_a_file_in_no_layer_fails(tmp_path):
    root = plant(tmp_path, {"module_utils/stray.py": "x = 1\n"})
    assert check(root, TOY_LAYERS, TOY_ANSIBLE) == ["module_utils/stray.py is in no layer of the table"]
