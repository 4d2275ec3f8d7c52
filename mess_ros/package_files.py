"""Where files are looked up: the package's own data, and files named by a user.

The package's data (``config/``, ``models/``, ``launch/``) sits beside the
sources in a checkout and under ``share/mess_ros`` once installed (pip or
colcon). Installed, the ament index says where that share directory is; a
plain pip install without ``AMENT_PREFIX_PATH`` is found under the Python
prefix or beside the installed package.

A relative path typed on a command line means the current directory, as in
any tool; a relative path inside a parameter file does not (see
:func:`mess_ros.config.parameter_file.anchor_artefacts`), so a stray file in the
directory a node is started from can never replace the configured one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

import mess_ros

PACKAGE: Final = "mess_ros"


def _ament_share() -> list[Path]:
    """The share directory the ament index knows for this package (none outside ROS)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return [Path(get_package_share_directory(PACKAGE))]
    except (ImportError, LookupError, OSError, ValueError):
        return []


def share_directories() -> list[Path]:
    """Directories that may hold the package's data files, most specific first.

    The checkout this module runs from, the ament index's share directory,
    ``share/mess_ros`` under the Python prefix, under the prefix the package
    is installed in (``pip install --prefix``), and under every
    ``AMENT_PREFIX_PATH`` entry.
    """
    package_dir = Path(mess_ros.__file__).resolve().parent
    directories = [package_dir.parent, *_ament_share()]
    prefixes = [
        sys.prefix,
        str(package_dir.parents[3]) if len(package_dir.parents) > 3 else "",
        *os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep),
    ]
    directories += [Path(prefix) / "share" / PACKAGE for prefix in prefixes if prefix]
    return list(dict.fromkeys(directories))


def package_data_file(relative: str) -> Path:
    """A data file such as ``config/default.yaml`` of the checkout or the installed package.

    The first candidate is returned when none exists, so the caller's error
    names a plausible path.
    """
    candidates = [directory / relative for directory in share_directories()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


def command_line_file(text: str) -> str:
    """A file named on a command line: absolute when it exists from the current directory.

    Otherwise the text is returned unchanged (empty for "the default", or a
    bare name such as ``cpu_rover.pt`` that is looked up among the packaged
    models).
    """
    if not text:
        return text
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text
