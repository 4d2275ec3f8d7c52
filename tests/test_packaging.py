"""package.xml declares the ROS packages the code imports, and nothing it does not use."""

from __future__ import annotations

import ast
import importlib.metadata
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Not on PyPI, so not recognisable by their distribution; imported by the launch file.
LAUNCH_PACKAGES = {"launch", "launch_ros"}
# Needed at run time without an import of their own: rclpy.lifecycle talks lifecycle_msgs.
USED_INDIRECTLY = {"lifecycle_msgs"}


def imported_modules() -> set[str]:
    """Top-level modules imported anywhere in the package and the launch file."""
    sources = [*(REPO / "mess_ros").rglob("*.py"), *(REPO / "launch").glob("*.py")]
    names: set[str] = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.partition(".")[0])
    return names


def ros_packages(modules: set[str]) -> set[str]:
    """The modules that come from ROS: launch's, or installed by a ``ros-*`` distribution."""
    distributions = importlib.metadata.packages_distributions()
    return {
        name
        for name in modules
        if name in LAUNCH_PACKAGES or any(d.startswith("ros-") for d in distributions.get(name, []))
    }


def declared_ros_dependencies() -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    names = {element.text or "" for element in root.iter("exec_depend")}
    return {name for name in names if not name.startswith("python3-")}


def test_package_xml_declares_every_imported_ros_package() -> None:
    imported = ros_packages(imported_modules())
    declared = declared_ros_dependencies()
    assert {"rclpy", "builtin_interfaces", "rosgraph_msgs", "ament_index_python"} <= imported
    assert imported - declared == set(), "imported but not declared in package.xml"
    assert declared - imported - USED_INDIRECTLY == set(), "declared but never imported"
