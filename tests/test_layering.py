"""The package's layout holds: shared floors never import a task, and nothing imports in a circle.

`dropmae_jax/` is shared floors (`config`, `ops`, `models`, `data`, `train`, `convert`) under three
task packages (`pretrain`, `track`, `vos`) and the `main` entry point. Every import statement of
every module (module level and inside functions alike) is read with `ast`, resolved to a module
file, and checked against the folder graph below; docs/layout.md explains it. Tasks are reached
from shared code only by module name at run time (`train/task.py`'s registry, the convert CLI's
task subcommands), which no import statement shows.
"""
from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "dropmae_jax"
FLOORS = {"config", "ops", "models", "data", "train", "convert"}
TASKS = {"pretrain", "track", "vos"}

# folder -> the other folders it may import. A folder may always import itself.
ALLOWED = {
    "config": set(),
    "ops": set(),
    "data": {"config"},
    "models": {"config", "ops", "data"},
    "train": {"config"},
    "convert": {"config", "models", "train"},
    # A task builds on every floor; pre-training also scores zero-shot label propagation with
    # vos's public evaluator while it trains (vos.during_training).
    "pretrain": FLOORS | {"vos"},
    "track": FLOORS,
    "vos": FLOORS,
    # The roof: `python -m dropmae_jax.main` and the package's own __init__.
    "main": FLOORS | TASKS,
    "__init__": set(),
}


def module_name(path: str, root: str) -> str:
  """'ROOT/dropmae_jax/track/inputs/pairs.py' -> 'dropmae_jax.track.inputs.pairs'."""
  rel = os.path.relpath(path, root)[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def package_modules(root: str) -> dict[str, str]:
  """Every module of the package under `root`: dotted name -> file."""
  modules = {}
  for folder, dirs, files in os.walk(os.path.join(root, PACKAGE)):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        modules[module_name(path, root)] = path
  return modules


def imported_modules(path: str, name: str, modules: dict[str, str]) -> list[tuple[int, str]]:
  """(line, module) for each package module that `path`'s import statements load.

  `from a.b import c` is module a.b.c when that is a module, else module a.b.
  """
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  is_package = os.path.basename(path) == "__init__.py"
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names
                if alias.name.split(".")[0] == PACKAGE]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: resolve against this module's package
        parts = name.split(".") if is_package else name.split(".")[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
      if base.split(".")[0] != PACKAGE:
        continue
      for alias in node.names:
        candidate = f"{base}.{alias.name}"
        found.append((node.lineno, candidate if candidate in modules else base))
  return [(line, module) for line, module in found if module in modules]


def folder_of(module: str) -> str:
  """'dropmae_jax.track.inputs.pairs' -> 'track'; 'dropmae_jax.main' -> 'main'."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def layering_violations(root: str) -> list[str]:
  """'file:line: folder imports other_folder (module)' for each import outside ALLOWED."""
  modules = package_modules(root)
  problems = []
  for name, path in sorted(modules.items()):
    source = folder_of(name)
    if source not in ALLOWED:
      problems.append(f"{os.path.relpath(path, root)}: folder {source!r} is not in the layout "
                      "(add it to ALLOWED and docs/layout.md)")
      continue
    for line, target in imported_modules(path, name, modules):
      destination = folder_of(target)
      if destination != source and destination not in ALLOWED[source]:
        problems.append(f"{os.path.relpath(path, root)}:{line}: {source} imports "
                        f"{destination} ({target})")
  return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one node, or with a self-loop (Tarjan)."""
  index, low, on_stack, stack, cycles = {}, {}, set(), [], []

  def visit(node: str) -> None:
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in sorted(graph.get(node, ())):
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      component = []
      while True:
        top = stack.pop()
        on_stack.discard(top)
        component.append(top)
        if top == node:
          break
      if len(component) > 1 or node in graph.get(node, ()):
        cycles.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return cycles


def module_graph(root: str) -> dict[str, set[str]]:
  modules = package_modules(root)
  return {name: {target for _, target in imported_modules(path, name, modules)} - {name}
          for name, path in modules.items()}


def benchmark_graph(root: str) -> dict[str, set[str]]:
  """benchmarks/*.py import each other as top-level modules (the folder is put on sys.path)."""
  folder = os.path.join(root, "benchmarks")
  names = {f[:-3] for f in os.listdir(folder) if f.endswith(".py")}
  graph = {}
  for name in names:
    tree = ast.parse(open(os.path.join(folder, name + ".py"), encoding="utf-8").read())
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets |= {a.name for a in node.names if a.name in names}
      elif isinstance(node, ast.ImportFrom) and not node.level and node.module in names:
        targets.add(node.module)
    graph[name] = targets - {name}
  return graph


def folder_graph(root: str) -> dict[str, set[str]]:
  graph: dict[str, set[str]] = {}
  for module, targets in module_graph(root).items():
    graph.setdefault(folder_of(module), set()).update(
        folder_of(t) for t in targets if folder_of(t) != folder_of(module))
  return graph


@pytest.mark.timeout(60)
def test_every_import_follows_the_folder_graph():
  assert layering_violations(REPO) == []


@pytest.mark.timeout(60)
def test_no_import_cycles_between_modules_folders_or_benchmarks():
  assert import_cycles(module_graph(REPO)) == []
  assert import_cycles(folder_graph(REPO)) == []
  assert import_cycles(benchmark_graph(REPO)) == []


@pytest.mark.timeout(60)
def test_the_layout_is_the_documented_one():
  found = {folder_of(m) for m in package_modules(REPO)}
  assert found == set(ALLOWED), "a folder was added or removed: update ALLOWED and docs/layout.md"
  # The floors really are below the tasks: no floor is allowed to import a task.
  assert all(not (ALLOWED[floor] & TASKS) for floor in FLOORS)


def _copy_package(tmp_path) -> str:
  import shutil
  root = str(tmp_path / "repo")
  shutil.copytree(os.path.join(REPO, PACKAGE), os.path.join(root, PACKAGE),
                  ignore=shutil.ignore_patterns("__pycache__"))
  return root


@pytest.mark.timeout(60)
def test_a_planted_upward_import_is_caught(tmp_path):
  root = _copy_package(tmp_path)
  assert layering_violations(root) == []
  target = os.path.join(root, PACKAGE, "data", "video.py")
  with open(target, "a", encoding="utf-8") as f:
    f.write("\n\ndef _planted():\n  from dropmae_jax.track import tracker  # a floor importing a task\n")
  problems = layering_violations(root)
  assert len(problems) == 1
  assert "data/video.py" in problems[0] and "data imports track" in problems[0]


@pytest.mark.timeout(60)
def test_a_planted_cycle_is_caught(tmp_path):
  root = _copy_package(tmp_path)
  # vos/metrics.py imports vos/davis.py; davis importing metrics back closes a circle inside one
  # folder, which the folder rules alone would allow.
  with open(os.path.join(root, PACKAGE, "vos", "davis.py"), "a", encoding="utf-8") as f:
    f.write("\n\nfrom dropmae_jax.vos import metrics as _planted  # noqa: E402\n")
  cycles = import_cycles(module_graph(root))
  assert ["dropmae_jax.vos.davis", "dropmae_jax.vos.metrics"] in cycles
