"""Atomic writes give the permissions a plain open() would, and stale temp files are removed."""

import os
import stat
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torch import nn

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
