"""Reading the small text files users hand to mess_ros (parameter files, tables, configs).

``Path.read_text`` fails in two ways: the file cannot be opened (``OSError``)
or it is not UTF-8 (``UnicodeDecodeError``, a ``ValueError`` that names no
file). Both become the caller's own error family here, with the file's name
and what the file should have held, so a binary or mis-encoded file ends a
tool with one sentence instead of a traceback.
"""

from __future__ import annotations

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
