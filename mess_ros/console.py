"""What every console script does with an error nobody planned for.

Errors mess_ros raises on purpose (:class:`~mess_ros.errors.MessError`) are
caught by each tool and printed as one sentence that names the file or
parameter. Anything else is a bug or a case nobody thought of; it still ends
the tool with one line saying what happened and how to see more, and a
non-zero status. The traceback is printed only on request (``--debug`` or
``MESS_ROS_DEBUG=1``), because the person reading it is usually running a
robot, not debugging this package.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Final, Protocol

DEBUG_OPTION: Final = "--debug"
DEBUG_VARIABLE: Final = "MESS_ROS_DEBUG"
EXIT_UNEXPECTED: Final = 1
EXIT_INTERRUPTED: Final = 130

Report = Callable[[str], None]


class Main(Protocol):
    """A console script's entry point: ``argv`` None reads ``sys.argv``; returns the status."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    """``--debug`` in the tool's help; :func:`console_main` reads it before parsing."""
    parser.add_argument(
        DEBUG_OPTION,
        action="store_true",
        help=f"print the traceback of an unexpected error (also {DEBUG_VARIABLE}=1)",
    )


def debug_requested(args: Sequence[str]) -> bool:
    """``--debug`` among the tool's own arguments (not after ``--ros-args``), or the variable."""
    own = list(args)
    if "--ros-args" in own:
        own = own[: own.index("--ros-args")]
    return DEBUG_OPTION in own or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def stderr_report(prog: str) -> Report:
    """The plain way a tool reports: ``<prog>: error: <message>`` on stderr."""

    def report(message: str) -> None:
        print(f"{prog}: error: {message}", file=sys.stderr)

    return report


def report_unexpected(err: BaseException, debug: bool, report: Report) -> None:
    """One line for an exception that is not a MessError; the traceback before it with debug."""
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    detail = " ".join(str(err).split()) or "(no message)"
    hint = "" if debug else f"; run again with {DEBUG_OPTION} for the traceback"
    report(f"unexpected {type(err).__name__}: {detail} (a bug in mess_ros{hint})")


def console_main(prog: str, report: Report | None = None) -> Callable[[Main], Main]:
    """Decorate a console script's ``main(argv)`` so no exception escapes as a traceback.

    ``report`` writes the final line (default :func:`stderr_report`); the ROS
    node passes its FATAL logger. ``main`` keeps handling its own expected
    errors and exit statuses; this is the net below them.
    """
    emit = report or stderr_report(prog)

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            debug = debug_requested(sys.argv[1:] if argv is None else argv)
            try:
                return main(argv)
            except KeyboardInterrupt:
                emit("interrupted")
                return EXIT_INTERRUPTED
            except Exception as err:
                report_unexpected(err, debug, emit)
                return EXIT_UNEXPECTED

        return run

    return wrap
