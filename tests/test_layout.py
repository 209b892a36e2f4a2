"""The package layout's rules, read from the source (nothing is imported):

* the library (``neurocodec_jax`` but its entry points and configs) imports neither
  the entry points, the configs, the torch bridge, codec training nor torch;
* the bridge imports neither entry points nor configs nor codec training;
* the library's module-level imports form no cycle.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = ("neurocodec_jax.cli", "neurocodec_jax.data.prepare.__main__")
CONFIGS = ("neurocodec_jax.configs",)


def modules(package: str) -> dict[str, str]:
  out = {}
  for folder, _, files in os.walk(os.path.join(ROOT, package)):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__")] = os.path.join(folder, f)
  return out


def imports(path: str, top_level_only: bool = False) -> set[str]:
  tree = ast.parse(open(path).read())
  nodes = tree.body if top_level_only else ast.walk(tree)
  names = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      names |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names |= {f"{node.module}.{a.name}" for a in node.names}
  return names


def _names_more_than_modules(path: str, package: str, lib) -> bool:
  """Whether ``from package import ...`` in ``path`` takes a name that is not a module."""
  for node in ast.parse(open(path).read()).body:
    if isinstance(node, ast.ImportFrom) and node.module == package and node.level == 0:
      if any(f"{package}.{a.name}" not in lib for a in node.names):
        return True
  return False


def under(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def library() -> dict[str, str]:
  return {m: p for m, p in modules("neurocodec_jax").items()
          if not under(m, ENTRY + CONFIGS)}


@pytest.mark.parametrize("module", sorted(library()))
def test_library_imports_point_down(module):
  bad = {n for n in imports(library()[module])
         if under(n, ENTRY + CONFIGS + ("codec_bridge", "codec_training", "torch", "configs"))}
  assert not bad, f"{module} imports {sorted(bad)}"


def test_bridge_imports_no_entry_point_config_or_training():
  for module, path in modules("codec_bridge").items():
    bad = {n for n in imports(path) if under(n, ENTRY + CONFIGS + ("codec_training",))}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_library_has_no_import_cycle():
  """Module-level imports; ``from package import submodule`` counts as the submodule,
  and a module's own parent packages (which import it) are not edges."""
  lib = library()

  def edges(m, path):
    names = imports(path, top_level_only=True)
    subs = {n for n in names if n in lib and n.rsplit(".", 1)[0] in names}
    parents = {n.rsplit(".", 1)[0] for n in subs}
    return {n for n in names if n in lib and n != m and not m.startswith(n + ".")
            and (n in subs or n not in parents or _names_more_than_modules(path, n, lib))}

  graph = {m: edges(m, p) for m, p in lib.items()}
  state = {}

  def visit(m, path):
    state[m] = "open"
    for n in graph[m]:
      if state.get(n) == "open":
        pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
      if n not in state:
        visit(n, path + [n])
    state[m] = "done"

  for m in graph:
    if m not in state:
      visit(m, [m])
