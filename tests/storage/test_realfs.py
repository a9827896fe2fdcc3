"""RealFileSystem keeps every path under its root and does real fsyncs."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.storage import FileClosed, InvalidPath
from synod.storage.files import FileSystem
from synod.storage.realfs import RealFileSystem


def test_real_files_round_trip(tmp_path: Path) -> None:
    fs: FileSystem = RealFileSystem(tmp_path)
    fs.mkdir("a/b")
    handle = fs.create("a/b/f")
    handle.write(b"hello ")
    handle.write(b"world")
    handle.fsync()
    handle.close()
    fs.fsync_dir("a/b")
    assert (tmp_path / "a" / "b" / "f").read_bytes() == b"hello world"
    assert fs.read_range("a/b/f", 6, 100) == b"world"
    again = fs.open_append("a/b/f")
    assert again.size == 11
    again.write(b"!")
    again.close()
    assert fs.read("a/b/f") == b"hello world!"
    fs.truncate("a/b/f", 5)
    assert fs.size("a/b/f") == 5
    with pytest.raises(InvalidPath, match="crosses directories"):
        fs.rename("a/b/f", "a/g")
    fs.rename("a/b/f", "a/b/g")
    assert fs.listdir("a/b") == ["g"] and fs.exists("a/b/g") and not fs.exists("a/b/f")
    fs.remove("a/b/g")
    assert fs.listdir("a/b") == []
    stats = fs.statistics()
    assert (stats.bytes_written, stats.fsyncs, stats.dir_fsyncs) == (12, 1, 1)


def test_create_truncates(tmp_path: Path) -> None:
    fs = RealFileSystem(tmp_path)
    fs.create("f").write(b"long content")
    handle = fs.create("f")
    assert handle.size == 0
    handle.close()
    assert fs.read("f") == b""


def test_paths_never_leave_the_root(tmp_path: Path) -> None:
    fs = RealFileSystem(tmp_path)
    for bad in ("/etc/passwd", "../escape", "a/../../b", ""):
        with pytest.raises(InvalidPath):
            fs.create(bad)


def test_a_closed_handle_refuses_use(tmp_path: Path) -> None:
    handle = RealFileSystem(tmp_path).create("f")
    handle.close()
    handle.close()
    with pytest.raises(FileClosed):
        handle.write(b"x")
