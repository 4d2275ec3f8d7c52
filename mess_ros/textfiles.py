"""Reading and writing the small text files of mess_ros (parameter files, tables, configs).

``Path.read_text`` fails in two ways: the file cannot be opened (``OSError``)
or it is not UTF-8 (``UnicodeDecodeError``, a ``ValueError`` that names no
file). Both become the caller's own error family here, with the file's name
and what the file should have held, so a binary or mis-encoded file ends a
tool with one sentence instead of a traceback. Writing replaces a file in one
step, so a reader (a node starting, a resumed run) never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mess_ros.errors import MessError


def read_text(path: str | Path, what: str, expected: str, error: type[MessError]) -> str:
    """The file's text; ``error`` naming ``what`` and ``path`` when it cannot be read or decoded.

    ``expected`` completes "expected ..." in the message for a file that is not
    UTF-8, e.g. ``"a JSON latency table written by mess_profile"``.
    """
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as err:
        raise error(f"cannot read {what} {source}: {err.strerror or err}") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        byte = data[err.start]
        msg = (
            f"{what} {source} is not UTF-8 text (byte 0x{byte:02x} at offset {err.start}); "
            f"expected {expected}"
        )
        raise error(msg) from err


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file that replaces ``path`` when the block ends.

    Parent folders are created. On any error, in the block or in writing,
    the temporary file is removed and ``path`` is left as it was (raises
    ``OSError`` for the file system's own failures).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(0o644)  # mkstemp makes 0600; these files are meant to be shared
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` in one step (see :func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))
