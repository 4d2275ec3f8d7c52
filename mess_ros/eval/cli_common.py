"""What the evaluation tools' command lines share: exit statuses, parsing, error lines.

``mess_evaluate`` and ``mess_bag`` return an exit status instead of raising:
0 on success, 2 when the input is wrong (missing or corrupt bag, unknown
topic, invalid parameter file, bad option), 1 when a live run fails (the node
did not start or stopped answering), 130 on Ctrl-C. Errors are one clear
sentence on stderr, never a traceback, because the people reading them are
running a robot, not debugging this package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Final

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_INTERRUPTED: Final = 130


class Parser(argparse.ArgumentParser):
    """argparse that reports errors with exit status 2 and no usage dump (usage is in --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parsed arguments, or the status argparse would exit with (--help: 0, bad option: 2).

    Returning the status keeps the entry points callable from Python without
    a SystemExit to catch.
    """
    try:
        return parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT


def fail(prog: str, err: BaseException, status: int) -> int:
    """Print ``err`` as the tool's one error line; ``status`` is returned for the caller."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    return status
