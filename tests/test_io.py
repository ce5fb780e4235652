"""Atomic writes give the permissions a plain open() would, and stale temp files are removed."""

import errno
import io
import os
import stat
import subprocess
import sys

import pandas as pd
import pytest
import torch
import typer
from rich.console import Console
from torch import nn

from pylon.cli.app import exit_on_user_error
from pylon.io import atomic_path, remove_stale_temp_files, write_csv_atomic, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_files_get_the_umask_permissions(tmp_path, umask):
    previous = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        write_text_atomic(tmp_path / "config.yaml", "a: 1\n")
        write_csv_atomic(pd.DataFrame({"a": [1]}), tmp_path / "eval.csv")
        with atomic_path(tmp_path / "last.ckpt") as tmp:
            torch.save({"w": torch.zeros(2)}, tmp)
        from pylon.models.weights import save_weights

        save_weights(nn.Linear(2, 2), tmp_path / "best.safetensors")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert _mode(plain) == expected  # what open() gives: the reference
    for name in ("config.yaml", "eval.csv", "last.ckpt", "best.safetensors"):
        assert _mode(tmp_path / name) == expected, name


def test_umask_of_another_process_is_honoured(tmp_path):
    code = (
        "import os, sys; os.umask(0o027); from pylon.io import write_text_atomic; "
        "write_text_atomic(sys.argv[1], 'x')"
    )
    target = tmp_path / "out.txt"
    subprocess.run([sys.executable, "-c", code, str(target)], check=True)
    assert _mode(target) == 0o640


def test_stale_temp_files_of_one_name_are_removed(tmp_path):
    stale = tmp_path / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"partial")
    other = tmp_path / ".best.safetensors.x.tmp"
    other.write_bytes(b"keep")
    keep = tmp_path / "last.ckpt"
    keep.write_bytes(b"real")
    assert remove_stale_temp_files(tmp_path, "last.ckpt") == [stale]
    assert not stale.exists() and other.exists() and keep.exists()
    assert remove_stale_temp_files(tmp_path / "missing", "last.ckpt") == []


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("call", ["fsync", "replace"])
def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch, call):
    """ENOSPC from the OS names the destination, keeps the previous file and leaves no temp
    file; through a command it is one line naming the file."""
    target = tmp_path / "eval_loc.csv"
    target.write_text("previous\n")
    monkeypatch.setattr(os, call, _no_space)
    with pytest.raises(OSError) as caught:
        write_csv_atomic(pd.DataFrame({"a": [1]}), target)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert str(target) in str(caught.value)
    monkeypatch.undo()
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_loc.csv"]

    console = Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(os, call, _no_space)
    with pytest.raises(typer.Exit), exit_on_user_error(console):
        write_text_atomic(tmp_path / "config.yaml", "a: 1\n")
    assert console.file.getvalue().strip() == (
        f"error: {tmp_path / 'config.yaml'}: No space left on device"
    )


def test_a_write_error_in_the_block_names_the_destination(tmp_path):
    target = tmp_path / "last.ckpt"
    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() raises
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOSPC
    # an error about another file (an input) passes unchanged, as does any other error
    with pytest.raises(FileNotFoundError) as caught, atomic_path(target):
        (tmp_path / "missing.txt").read_text()
    assert caught.value.filename == str(tmp_path / "missing.txt")
    with pytest.raises(KeyError), atomic_path(target):
        raise KeyError("bug")
    assert list(tmp_path.iterdir()) == []


def test_torch_save_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError without the errno (as seen writing to
    /dev/full); with no free block left it becomes ENOSPC naming the file."""
    target = tmp_path / "last.ckpt"
    torch_error = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
    with pytest.raises(RuntimeError, match="unexpected pos"), atomic_path(target):
        raise RuntimeError(torch_error)  # a disk with space left: unchanged
    full = os.statvfs_result((4096, 4096, 100, 0, 0, 10, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda folder: full)
    with pytest.raises(OSError) as caught, atomic_path(target):
        raise RuntimeError(torch_error)
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOSPC
