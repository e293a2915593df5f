"""The layout rules of README's Layout: no module over 300 lines, no import cycle among the
repo's modules (module-level imports; a function-level import is how a CLI reaches a sibling
lazily), and analysis/ imports nothing of experiments/ or models/."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "benchmarks", "configs", "experiments", "models", "pallas_kernels",
            "runfiles", "structured")


def _modules() -> dict[str, pathlib.Path]:
  found = {}
  for package in PACKAGES:
    for path in (ROOT / package).rglob("*.py"):
      parts = path.relative_to(ROOT).with_suffix("").parts
      found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return found


def _imports(path: pathlib.Path, name: str, modules) -> set[str]:
  """The repo modules ``name`` imports at module level (``from a import b``: a.b if a module)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = set()
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] +
                        ([base] if base else []))
      targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                 for alias in node.names]
    else:
      continue
    out |= {t for t in targets if t in modules and t != name}
  return out


def test_no_module_over_300_lines():
  long = {name: n for name, path in _modules().items()
          if (n := len(path.read_text().splitlines())) > 300}
  assert not long, f"modules over 300 lines: {long}"


def test_no_import_cycles():
  modules = _modules()
  graph = {name: _imports(path, name, modules) for name, path in modules.items()}
  state, stack = {}, []

  def visit(name):
    state[name] = "open"
    stack.append(name)
    for dep in sorted(graph[name]):
      if state.get(dep) == "open":
        raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(dep):] + [dep])}")
      if dep not in state:
        visit(dep)
    stack.pop()
    state[name] = "done"

  for name in sorted(graph):
    if name not in state:
      visit(name)


def test_analysis_reads_run_files_only():
  modules = _modules()
  for name, path in modules.items():
    if name.startswith("analysis"):
      bad = {d for d in _imports(path, name, modules)
             if d.split(".")[0] in ("experiments", "models")}
      assert not bad, f"{name} imports {bad}"
