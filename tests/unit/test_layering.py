"""Dependencies point one way (DESIGN.md §2), checked on the source with ``ast``.

Every import counts, at any depth (the lazy ones inside functions too), and so does every ``"module:function"``
target in ``rewards.registry.BUILTIN_REWARDS``. A package is ``rewardloop.<first name>`` (``models``, ``ops``, ...);
imports inside one package are free.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "rewardloop"
REGISTRY = SRC / "rewards" / "registry.py"

BOTTOM = {"config", "ops", "types"}
# package → the other rewardloop packages it may import. A package not named here may import anything but the
# entry points in TOP, which may import anything; none may import the rewardloop root (it imports everything).
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "chat": set(),
    "ops": BOTTOM,
    "types": BOTTOM,
    "data": BOTTOM | {"chat"},
    "models": BOTTOM,
    "rewards": BOTTOM | {"chat", "models"},
    "envs": BOTTOM | {"rewards", "data"},
    "eval": BOTTOM,  # off-policy evaluation and fairness metrics: pure numpy, used by algorithms and the loop
    "rollout": BOTTOM | {"chat", "envs", "rewards", "models"},
    "store": BOTTOM | {"data", "rewards"},  # the only package importing sqlalchemy
    "serve": BOTTOM | {"chat", "models", "rollout", "store"},  # the only package importing fastapi / uvicorn
}
TOP = {"cli", "quickstart"}


def module_name(path: Path) -> str:
    parts = ["rewardloop", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = SRC.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) for every rewardloop import in ``path``."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:
                # ``from rewardloop import diagnostics`` imports the module rewardloop.diagnostics
                submodule = f"{module}.{alias.name}"
                found.append(
                    (node.lineno, submodule, None) if is_module(submodule) else (node.lineno, module, alias.name)
                )
    return [(line, mod, name) for line, mod, name in found if mod.split(".")[0] == "rewardloop"]


def registry_targets() -> list[tuple[int, str]]:
    """(line, module) of each ``"module:function"`` string in the BUILTIN_REWARDS literal."""
    for node in ast.parse(REGISTRY.read_text(encoding="utf-8")).body:
        target = node.target if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [None])[0]
        if isinstance(target, ast.Name) and target.id == "BUILTIN_REWARDS" and isinstance(node.value, ast.Dict):
            values = node.value.values
            return [(v.lineno, v.value.partition(":")[0]) for v in values if isinstance(v, ast.Constant)]
    raise AssertionError(f"no BUILTIN_REWARDS dict literal in {REGISTRY}")


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rewardloop"


def allowed(source: str, target: str) -> bool:
    if source == target:
        return True
    if target == "rewardloop":
        return False
    if source in ALLOWED:
        return target in ALLOWED[source]
    return source in TOP or target not in TOP


def edges() -> list[tuple[str, str, str, str | None]]:
    """(where "file:line", importing module, imported module, imported name or None) over every module, plus the
    registry's string targets."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel, here = path.relative_to(SRC.parent), module_name(path)
        out += [(f"{rel}:{line}", here, mod, name) for line, mod, name in imports(path)]
    rel, here = REGISTRY.relative_to(SRC.parent), module_name(REGISTRY)
    out += [(f"{rel}:{line}", here, mod, None) for line, mod in registry_targets()]
    return out


def test_packages_import_only_downwards():
    bad = []
    for where, here, module, _ in edges():
        source, target = package_of(here), package_of(module)
        if not allowed(source, target):
            may = ", ".join(sorted(ALLOWED[source])) if source in ALLOWED else f"anything but {', '.join(sorted(TOP))}"
            bad.append(f"{where} imports {module} ({source} may import {may or 'nothing of rewardloop'})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_package_loop():
    graph: dict[str, set[str]] = {}
    for _, here, module, _ in edges():
        source, target = package_of(here), package_of(module)
        if source not in ("rewardloop", target):
            graph.setdefault(source, set()).add(target)

    def loop_from(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        for nxt in sorted(graph.get(node, ())):
            if found := loop_from(nxt, [*path, node]):
                return found
        return None

    def canonical(loop: list[str]) -> str:  # the same loop found from another start: rotate to its least node
        i = loop.index(min(loop[:-1]))
        return " → ".join([*loop[i:-1], *loop[:i], loop[i]])

    loops = {canonical(found) for start in graph if (found := loop_from(start, []))}
    assert not loops, "package import loops:\n" + "\n".join(sorted(loops))


def test_no_private_imports_across_modules():
    bad = [
        f"{where} imports {name} from {module}"
        for where, here, module, name in edges()
        if name and name.startswith("_") and not name.startswith("__") and module != here
    ]
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


SHARED = ("rewardloop.algorithms", "rewardloop.algorithms.common", "rewardloop.algorithms.preference")


def test_algorithms_share_code_through_shared_modules_only():
    """One file per algorithm: DPO does not import SFT; what trainers share lives in common.py (all of them),
    preference.py (the offline preference learners, DPO and KTO) or below. rlhf chains trainers (SFT → reward model
    → PPO), so it alone imports them."""
    bad = {
        f"{where} imports {module}"
        for where, here, module, _ in edges()
        if package_of(here) == package_of(module) == "algorithms"
        and here != "rewardloop.algorithms.rlhf"
        and module not in SHARED
    }
    assert not bad, "algorithms importing each other:\n" + "\n".join(sorted(bad))


# heavy optional library → the one package allowed to import it (DESIGN.md §2)
OWNERS = {"sqlalchemy": "store", "alembic": "store", "psycopg": "store", "fastapi": "serve", "uvicorn": "serve",
          "starlette": "serve", "ray": "distributed", "trl": None, "vllm": "distributed", "gymnasium": "envs",
          "playwright": None, "vowpalwabbit": None}  # fmt: skip


def test_heavy_libraries_are_imported_only_by_their_package():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        package = package_of(module_name(path))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in OWNERS and OWNERS[top] != package:
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno} imports {top} (owner: {OWNERS[top] or 'none'})")
    assert not bad, "\n".join(bad)
