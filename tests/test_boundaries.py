"""Package boundaries (DESIGN section 3): who may import torch, DALI, Ray, MLflow and each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("preprocessing", "model", "pipeline", "orchestration")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, by full dotted name (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module)
    return names


def files_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


# Imported by every package: it imports nothing of ours (the one validation idiom of configs).
SHARED = ("preprocessing.validation",)


def violations(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return [name for name in imported_modules(path) if name not in SHARED
            and any(name == f or name.startswith(f + ".") for f in forbidden)]


RULES = {
    "preprocessing": ("torch", "nvidia", "ray", "mlflow", "model", "pipeline", "orchestration"),
    "model": ("nvidia", "ray", "mlflow", "torch.distributed", "pipeline", "orchestration",
              "preprocessing"),
    "pipeline": ("ray", "mlflow", "orchestration"),
}


@pytest.mark.parametrize("package", list(RULES))
def test_package_imports_stay_inside_its_boundary(package):
    found = {str(p.relative_to(ROOT)): violations(p, RULES[package]) for p in files_of(package)}
    assert not {p: v for p, v in found.items() if v}


def test_only_pipeline_dali_files_import_dali():
    for package in PACKAGES:
        for path in files_of(package):
            if package == "pipeline" and path.name.startswith("dali_"):
                continue
            assert not violations(path, ("nvidia.dali", "nvidia")), path


def test_the_shared_module_imports_nothing_of_ours():
    ours = ("preprocessing", "model", "pipeline", "orchestration", "torch", "nvidia", "ray",
            "mlflow", "numpy")
    for name in SHARED:
        path = ROOT / (name.replace(".", "/") + ".py")
        assert not violations(path, ours), path


def test_the_boundary_checker_sees_imports():
    sample = ROOT / "model" / "objective.py"
    assert "torch" in imported_modules(sample)
    assert "model.losses" in imported_modules(sample)
