"""The import graph keeps its layers: low-level pieces at the bottom, ROS only in mess_ros/ros/.

Read from the sources (every import statement, including those inside
functions), so a layer violation fails here before anyone notices an
unexpected torch or rclpy import at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mess_ros"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> Mapping[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@cache
def imported_names(module: str) -> frozenset[str]:
    """Every module name an import statement of ``module`` names (relative ones resolved)."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            # ``from mess_ros.config import parameter_file`` imports a module too.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def internal_imports(module: str) -> set[str]:
    """The package modules ``module`` imports, with the packages Python imports on the way."""
    found = set()
    for name in imported_names(module):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate in modules():
                found.add(candidate)
    found.discard(module)
    return found


def closure(module: str) -> set[str]:
    """``module`` and every package module it imports, directly or not."""
    seen = {module}
    todo = [module]
    while todo:
        for name in internal_imports(todo.pop()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def external_roots(module: str) -> set[str]:
    """Top-level packages outside mess_ros that ``module`` imports directly."""
    return {name.split(".")[0] for name in imported_names(module)} - {"mess_ros"}


def is_ros(root: str) -> bool:
    """rclpy, its relatives and generated ROS interface packages (``*_msgs``, ``*_srvs``)."""
    return root.startswith(("rclpy", "rcl_", "rosidl", "launch")) or root.endswith(
        ("_msgs", "_srvs", "_interfaces")
    )


def in_subpackage(module: str, *subpackages: str) -> bool:
    return any(
        module == f"mess_ros.{s}" or module.startswith(f"mess_ros.{s}.") for s in subpackages
    )


def test_the_graph_is_read_from_every_module() -> None:
    assert len(modules()) > 50
    assert "mess_ros.config.schema" in internal_imports("mess_ros.config.parameter_file")
    assert "torch" in external_roots("mess_ros.runtime.engine")
    assert "rclpy" in external_roots("mess_ros.ros.core")


def test_only_mess_ros_ros_imports_rclpy_or_ros_messages() -> None:
    found = [
        f"{module} imports {', '.join(sorted(filter(is_ros, external_roots(module))))}"
        for module in modules()
        if not in_subpackage(module, "ros") and any(is_ros(root) for root in external_roots(module))
    ]
    assert found == []


def test_nothing_below_the_ros_glue_imports_it() -> None:
    """The ROS layer calls down into the tools (live replay into the evaluation command), never
    the other way round, not even lazily."""
    found = [
        f"{module} -> {dependency}"
        for module in modules()
        if not in_subpackage(module, "ros")
        for dependency in sorted(internal_imports(module))
        if in_subpackage(dependency, "ros")
    ]
    assert found == []


@pytest.mark.parametrize("subpackage", ["common", "config"])
def test_bottom_layers_import_neither_torch_nor_rclpy(subpackage: str) -> None:
    found = []
    for module in modules():
        if not in_subpackage(module, subpackage):
            continue
        for dependency in sorted(closure(module)):
            heavy = {r for r in external_roots(dependency) if r == "torch" or is_ros(r)}
            if heavy:
                found.append(f"{module} -> {dependency} imports {', '.join(sorted(heavy))}")
    assert found == []


@pytest.mark.parametrize("subpackage", ["runtime", "model"])
def test_runtime_and_model_import_nothing_from_deploy_eval_or_train(subpackage: str) -> None:
    found = [
        f"{module} -> {dependency}"
        for module in modules()
        if in_subpackage(module, subpackage)
        for dependency in sorted(closure(module))
        if in_subpackage(dependency, "deploy", "eval", "train")
    ]
    assert found == []


def test_bottom_layers_load_without_torch_or_rclpy() -> None:
    """What the source says holds at run time: a fresh interpreter never loads torch or rclpy."""
    code = (
        "import sys\n"
        "import mess_ros.common, mess_ros.config, mess_ros.config.parameter_file\n"
        "print(sorted(m for m in ('torch', 'rclpy') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
