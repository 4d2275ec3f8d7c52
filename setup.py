"""ament_python package definition: builds with colcon and installs with pip."""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "mess_ros"


def files(*patterns: str) -> list[str]:
    """Relative paths matching the patterns; setuptools wants strings relative to setup.py."""
    return sorted(str(path) for pattern in patterns for path in Path().glob(pattern))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", files("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", files("config/*.yaml", "config/*.xml", "config/*.json")),
        # A robot's parameter file names its checkpoint and latency table relative to itself:
        # those files are installed beside it when mess_configure wrote them there.
        (
            f"share/{PACKAGE}/config/robots",
            files("config/robots/*.yaml", "config/robots/*.pt", "config/robots/*.json"),
        ),
        (f"share/{PACKAGE}/models", files("models/*.pt", "models/*.json", "models/*.npz")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="mess_ros maintainers",
    maintainer_email="maintainers@mess-ros.dev",
    description="Multi-Exit Semantic Segmentation for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "segmentation_node = mess_ros.ros.node:main",
            "synthetic_camera = mess_ros.ros.synthetic_camera:main",
            "mess_demo = mess_ros.ros.demo:main",
            "mess_train = mess_ros.train.cli:main",
            "mess_convert = mess_ros.train.cli:convert_main",
            "mess_profile = mess_ros.deploy.cli:profile_main",
            "mess_configure = mess_ros.deploy.cli:configure_main",
            "mess_evaluate = mess_ros.ros.evaluate:main",
            "mess_bag = mess_ros.eval.bag_cli:main",
        ],
    },
)
