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
from pathlib import Path

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


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file renamed over it.

    Parent folders are created. Raises ``OSError``; the temporary file is removed then.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(tmp_name).chmod(0o644)  # mkstemp makes 0600; these files are meant to be shared
        Path(tmp_name).replace(target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
