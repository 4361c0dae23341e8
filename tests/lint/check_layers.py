"""The import-layer check: no lower layer imports a higher one (ARCHITECTURE.md, "Layers").

    geometry, dataset, metrics (and fourier, ports, plots, documents, intervals)
      < sim, recon, model, stitch            (no bluesky, ophyd, tiled)
      < storage, inference, stream, ioc
      < devices, plans, callbacks, retrain, view  (RunEngine side: no torch at import time)
      < session
      < commands, cli, demo

Every ``import`` of a ``bluesky_ptychonn`` module anywhere in a file (at the top or inside a
function: a lazy import is still a dependency) must name a module of the same or a lower
layer. Run as a script (``python tests/lint/check_layers.py [SRC]``, part of ``make lint``) it
prints one line per violation and exits 1; `tests/lint/test_layers.py` runs it in the suite.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "bluesky_ptychonn"
LAYERS: dict[str, int] = {
    "__init__": 0, "geometry": 0, "dataset": 0, "metrics": 0, "fourier": 0, "ports": 0,
    "intervals": 0, "lazy": 0,
    "plots": 0, "documents": 0,
    "sim": 1, "recon": 1, "model": 1, "stitch": 1, "adaptive": 1,
    "storage": 2, "inference": 2, "stream": 2, "ioc": 2,
    "devices": 3, "plans": 3, "callbacks": 3, "retrain": 3, "studies": 3, "view": 3,
    "session": 4,
    "commands": 5, "cli": 5, "demo": 5, "__main__": 5,
}  # fmt: skip
NO_BLUESKY_BELOW = 2  # layers 0-1 know nothing of bluesky, ophyd or tiled
BLUESKY_PACKAGES = ("bluesky", "ophyd", "ophyd_async", "event_model", "tiled")
RUN_ENGINE_SIDE = ("devices", "plans", "callbacks", "view", "session")  # no torch at import time


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def part_of(module: str) -> str:
    """The top-level part of a dotted module name inside the package (``sim``, ``cli``...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, src: Path) -> str:
    relative = path.relative_to(src).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str, bool]]:
    """(line, absolute module, at module level) of every import in ``tree``."""
    found: list[tuple[int, str, bool]] = []
    top_level = {id(node) for node in getattr(tree, "body", [])}
    for node in ast.walk(tree):
        at_top = id(node) in top_level
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, at_top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or not node.level:
                found.append((node.lineno, target, at_top))
            if node.level and node.module is None:  # from . import x: x may be a module
                found += [(node.lineno, f"{target}.{a.name}", at_top) for a in node.names]
            elif node.level:
                found.append((node.lineno, target, at_top))
    return found


def check(src: Path) -> list[Violation]:
    """Every layer violation under ``src`` (the folder holding the package)."""
    violations: list[Violation] = []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        module = module_name(path, src)
        part = part_of(module)
        if part not in LAYERS:
            violations.append(Violation(path, 1, f"{module}: no layer assigned (LAYERS)"))
            continue
        level = LAYERS[part]
        tree = ast.parse(path.read_text(), str(path))
        for line, target, at_top in imported_modules(tree, module, path.name == "__init__.py"):
            root = target.split(".")[0]
            if root == PACKAGE:
                other = part_of(target)
                if other in LAYERS and LAYERS[other] > level:
                    violations.append(
                        Violation(
                            path, line,
                            f"{part} (layer {level}) imports {target} ({other}, layer "
                            f"{LAYERS[other]}): a lower layer never imports a higher one",
                        )
                    )  # fmt: skip
            elif level < NO_BLUESKY_BELOW and root in BLUESKY_PACKAGES:
                violations.append(
                    Violation(path, line, f"{part} (layer {level}) imports {target}: no bluesky")
                )
            elif part in RUN_ENGINE_SIDE and root == "torch" and at_top:
                violations.append(
                    Violation(path, line, f"{part} imports torch at import time (RunEngine side)")
                )
    return violations


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "src"
    violations = check(src)
    for violation in violations:
        print(violation)
    print(f"import layers: {len(violations)} violation(s)", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
