"""The prepared GPU benchmark runs end to end (on the CPU, tiny), so a session lent a GPU does not
spend its minutes on a broken script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


@pytest.mark.slow
def test_gpu_bench_smoke_run_on_the_cpu():
    args = "--device cpu --encoder resnet18 --sizes 256 --batch 2 --steps 1 --images 4"
    args += " --precisions fp32 --workers 1 --epoch 8"
    done = subprocess.run(
        [sys.executable, str(BENCH), *args.split()], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"256 px PYLON-resnet18 training step, fp32: [\d.]+ img/s", lines[1])
    assert re.fullmatch(
        r"256 px loader, 1 workers, cache 512 px: [\d.]+ img/s = [\d.]+x the fastest step \(fp32\)"
        r": (not )?loader-bound; [\d.]+ workers keep it busy",
        lines[2],
    )
