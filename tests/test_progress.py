"""Progress reporting: plain lines in non-interactive output, nothing when off."""

import io
import os
import subprocess
import sys

import pytest

from pylon.progress import Progress, format_duration, progress_mode, track


def test_plain_lines_every_five_percent_with_rate_and_eta(monkeypatch):
    monkeypatch.delenv("PYLON_PROGRESS", raising=False)
    out = io.StringIO()  # not a TTY: plain lines
    items = list(track(range(100), description="caching", stream=out, interval=3600))
    assert items == list(range(100))
    lines = out.getvalue().splitlines()
    assert len(lines) == 20  # every 5 units of 100; the last line is the final count
    assert lines[0].startswith("caching: 5/100 (5%), ")
    assert "img/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("caching: 100/100 (100%)") and "ETA" not in lines[-1]


def test_time_interval_without_total(monkeypatch):
    monkeypatch.delenv("PYLON_PROGRESS", raising=False)
    out = io.StringIO()
    with Progress("predict", None, stream=out, interval=0.0) as progress:
        for _ in range(3):
            progress.advance()
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["predict: 1", "predict: 2", "predict: 3"]


def test_disabled_prints_nothing():
    out = io.StringIO()
    list(track(range(10), stream=out, enabled=False))
    assert out.getvalue() == ""


def test_log_file_of_a_subprocess_gets_lines(tmp_path):
    log = tmp_path / "log.txt"
    code = "from pylon.progress import track\nfor _ in track(range(40), description='work'): pass\n"
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-c", code], stderr=fh, stdout=fh, check=True)
    text = log.read_text()
    assert "work: 40/40 (100%)" in text and "\x1b[" not in text


def test_format_duration():
    assert format_duration(75.2) == "1:15"
    assert format_duration(3725) == "1:02:05"


def test_mode_follows_the_stream_a_real_terminal_gets_the_bar(monkeypatch, tmp_path):
    monkeypatch.delenv("PYLON_PROGRESS", raising=False)
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal, open(tmp_path / "log", "w") as log:
        assert progress_mode(terminal) == "bar" and progress_mode(log) == "lines"
        assert progress_mode(terminal, enabled=False) == "off"
        monkeypatch.setenv("PYLON_PROGRESS", "off")
        assert progress_mode(log) == "off"
    os.close(leader)


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("PYLON_PROGRESS", raising=False)
    monkeypatch.setenv("PYLON_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    list(track(range(3), description="work", stream=out, fraction=None))
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "work: 1/3 (33%)", "work: 2/3 (67%)", "work: 3/3 (100%)",
    ]  # fmt: skip
    monkeypatch.setenv("PYLON_PROGRESS_INTERVAL", "often")
    with pytest.raises(ValueError, match="PYLON_PROGRESS_INTERVAL='often'"):
        Progress("work", 3)
