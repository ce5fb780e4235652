"""Every example of README.md and docs/*.md runs as written, or says why it cannot.

Each fenced ``python`` block and each ``bash``/``sh``/``shell`` block is an example. Python blocks
of one page run in order in one namespace (a later block may use an earlier one's names), in a
temporary working folder; shell blocks must hold ``pylon ...`` commands only, each run through the
CLI and expected to exit 0. A block that cannot run here in seconds on a CPU (a real dataset, a GPU,
a trained run, long training, a synopsis with ``[optional]`` parts) carries a marker on the line
just before its fence, with the reason::

    <!-- no-run: needs the NIH dataset -->

An unmarked block that fails fails this test, naming the page and line.
"""

from __future__ import annotations

import re
import shlex
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
NO_RUN = re.compile(r"^\s*<!--\s*no-run:\s*(\S.*?)\s*-->\s*$")


@dataclass
class Example:
    """One fenced example: its page, the line of its opening fence, kind, code and marker."""

    page: Path
    line: int
    kind: str  # "python" or "shell"
    code: str
    no_run: str | None  # the marker's reason

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The python and shell examples of ``page``, in order, with their ``no-run`` markers.

    Args:
        page: a Markdown file.

    Returns:
        The examples; blocks in other languages (``text``, none) are not examples.
    """
    lines = page.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, language = match.group(1), match.group(2).lower()
        end = index + 1
        while end < len(lines) and not FENCE.match(lines[end]):
            end += 1
        if language in LANGUAGES:
            before = index - 1
            while before >= 0 and not lines[before].strip():
                before -= 1
            marker = NO_RUN.match(lines[before]) if before >= 0 else None
            body = [line[len(indent) :] if line.startswith(indent) else line
                    for line in lines[index + 1 : end]]  # fmt: skip
            found.append(
                Example(
                    page,
                    index + 1,
                    LANGUAGES[language],
                    "\n".join(body) + "\n",
                    marker.group(1) if marker else None,
                )
            )
        index = end + 1
    return found


def shell_commands(code: str) -> list[str]:
    """The commands of a shell example: continuation lines joined, comments and blanks dropped."""
    joined = code.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


def run_shell(example: Example) -> None:
    from pylon.cli.main import app

    runner = CliRunner()
    for command in shell_commands(example.code):
        words = shlex.split(command)
        if words[0] != "pylon":
            raise AssertionError(
                f"{example.where}: {command!r} is not a pylon command; run only pylon commands "
                "here or mark the block <!-- no-run: reason -->"
            )
        result = runner.invoke(app, words[1:])
        if result.exit_code != 0:
            raise AssertionError(
                f"{example.where}: {command!r} exited {result.exit_code}:\n{result.output}"
                + "".join(traceback.format_exception(result.exception) if result.exception else [])
            )


def run_page(page: Path) -> list[str]:
    """Run the page's unmarked examples; return the failures (one text per failing block)."""
    namespace: dict = {"__name__": "__docs__"}
    failures = []
    for example in examples(page):
        if example.no_run is not None:
            continue
        try:
            if example.kind == "python":
                exec(compile(example.code, example.where, "exec"), namespace)
            else:
                run_shell(example)
        except Exception:
            failures.append(f"{example.where} ({example.kind}):\n{traceback.format_exc()}")
    return failures


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A fresh working folder and cache; no progress output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYLON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYLON_PROGRESS", "off")
    return tmp_path


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_examples_run_or_say_why_not(page, sandbox):
    failures = run_page(page)
    assert not failures, (
        "examples that fail (fix them, or mark them <!-- no-run: reason --> just before the "
        "fence):\n\n" + "\n".join(failures)
    )


def test_markers_are_read_and_unmarked_failures_fail(sandbox):
    page = sandbox / "page.md"
    page.write_text(
        "# t\n\n<!-- no-run: needs the NIH dataset -->\n```python\nraise SystemError\n```\n\n"
        "```python\nvalue = 41\n```\n\nText.\n\n```py\nnot an example\n```\n\n"
        "- a list item:\n  ```python\n  value += 1\n  ```\n\n"
        "```bash\npylon models   # the models\n```\n\n"
        "```sh\npylon presets --no-such-option\n```\n\n"
        "```bash\nmake demo\n```\n"
    )
    found = examples(page)
    assert [(e.line, e.kind, e.no_run) for e in found] == [
        (4, "python", "needs the NIH dataset"),
        (8, "python", None),
        (19, "python", None),
        (23, "shell", None),
        (27, "shell", None),
        (31, "shell", None),
    ]
    assert found[2].code == "value += 1\n"
    failures = run_page(page)
    assert [f.split(" ", 1)[0] for f in failures] == [f"{page}:27", f"{page}:31"]
    assert "exited 2" in failures[0] and "not a pylon command" in failures[1]


def test_shell_commands_join_continuations_and_drop_comments():
    code = "pylon heatmaps RUN \\\n    --all   # every pair\n\n# a comment\npylon presets\n"
    assert shell_commands(code) == ["pylon heatmaps RUN --all", "pylon presets"]


def test_readme_lists_every_command():
    """README's `pylon --help lists the commands: ...` sentence names exactly the commands."""
    import typer.main

    from pylon.cli.main import app

    text = (ROOT / "README.md").read_text()
    sentence = re.search(r"`pylon --help` lists the commands:(.*?)\.\n", text, re.S)
    assert sentence, "README.md: the sentence listing the commands is gone"
    listed = re.findall(r"`([\w-]+)`", sentence.group(1))
    commands = typer.main.get_command(app).commands
    assert sorted(listed) == sorted(commands)


def config_keys(cls, prefix: str = "") -> list[str]:
    """The dotted keys of a config dataclass (sections expanded)."""
    import dataclasses

    keys = []
    for field in dataclasses.fields(cls):
        factory = field.default_factory
        if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
            keys += config_keys(factory, f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


def test_training_config_table_lists_every_key():
    """docs/training.md's table names every TrainConfig key (``data.train_split``, ``val_split``:
    a bare name takes the section of the dotted name before it in its cell)."""
    from pylon.training.config import TrainConfig

    listed = set()
    for line in (ROOT / "docs" / "training.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        section = ""
        for name in re.findall(r"`([\w.]+)`", line.split("|")[1]):
            if "." in name:
                section = name.rsplit(".", 1)[0] + "."
                listed.add(name)
            else:
                listed.add(section + name)
    missing = [key for key in config_keys(TrainConfig) if key not in listed]
    assert not missing, f"docs/training.md's config table lacks {missing}"
