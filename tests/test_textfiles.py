"""Text files users hand over: unreadable and binary files name themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from mess_ros.common.errors import LatencyTableError
from mess_ros.common.latency_table import LatencyTable
from mess_ros.config import ConfigError, parameter_file
from mess_ros.data.datasets import DatasetSpec, build_dataset
from mess_ros.data.errors import DatasetError
from mess_ros.errors import MessError
from mess_ros.textfiles import atomic_write, read_text, write_text_atomically
from mess_ros.train.config import load_config
from mess_ros.train.errors import TrainError

NOT_UTF8 = b'{"format": "\xff\xfe"}'


def test_read_text_names_the_file_and_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    path.write_bytes(NOT_UTF8)
    with pytest.raises(MessError) as info:
        read_text(path, "latency table", "a JSON table", MessError)
    message = str(info.value)
    assert f"latency table {path} is not UTF-8 text" in message
    assert "byte 0xff at offset 12" in message and "expected a JSON table" in message
    with pytest.raises(MessError, match=r"cannot read latency table .*absent.*No such file"):
        read_text(tmp_path / "absent.json", "latency table", "a JSON table", MessError)
    (tmp_path / "ok.txt").write_text("é", encoding="utf-8")
    assert read_text(tmp_path / "ok.txt", "file", "text", MessError) == "é"


def test_every_reader_of_user_files_reports_binary_content(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(NOT_UTF8)
    with pytest.raises(LatencyTableError, match=f"latency table {binary} is not UTF-8"):
        LatencyTable.load(binary)
    with pytest.raises(ConfigError, match=f"parameter file {binary} is not UTF-8"):
        parameter_file.read(binary)
    with pytest.raises(TrainError, match="is not UTF-8"):
        load_config(binary)
    root = tmp_path / "data"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    (root / "labels.json").write_bytes(NOT_UTF8)
    with pytest.raises(DatasetError, match=r"labels\.json is not UTF-8"):
        build_dataset(DatasetSpec(kind="folder", path=str(root)))


def test_atomic_write_replaces_whole_files_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "robots" / "rover.yaml"
    write_text_atomically(path, "first\n")
    assert path.read_text() == "first\n"
    assert (path.stat().st_mode & 0o777) == 0o644
    with pytest.raises(RuntimeError, match="interrupted"), atomic_write(path) as handle:
        handle.write(b"half a fi")
        raise RuntimeError("interrupted")
    assert path.read_text() == "first\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["rover.yaml"]
    write_text_atomically(path, "second ✓\n")
    assert path.read_text(encoding="utf-8") == "second ✓\n"
