"""The README's CLI reference and the CLI itself name the same commands, and every option the
README mentions exists on the command it is mentioned for (as sqlite-utils checks its docs)."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from clapdex.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], click.Command]:
    out = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out.update(_leaf_commands(command, prefix + (name,)))
        else:
            out[prefix + (name,)] = command
    return out


COMMANDS = _leaf_commands(main)


def _reference_rows() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## CLI reference"):]
    section = section[:section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 2 and cells[0].startswith("`"):
            rows.append((cells[0], " | ".join(cells[1:])))
    return rows


def _command_of(span: str, previous: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The command a backtick span names ("clapdex vocab list", "show NAME" after a vocab
    command, "eval retrieval DATA"), or None if it names none."""
    words = span.replace("clapdex ", "", 1).split() if span.startswith("clapdex ") else span.split()
    if previous and len(previous) == 2 and words and (previous[0], words[0]) in COMMANDS:
        return previous[0], words[0]  # "show NAME" after "vocab list" is "vocab show"
    for length in (2, 1):
        if tuple(words[:length]) in COMMANDS:
            return tuple(words[:length])
    return None


def _documented() -> tuple[set[tuple[str, ...]], list[tuple[list, str]]]:
    """(the commands of the reference table, [(commands, option)]: an option the README mentions
    and the commands it may belong to: the one its span names, else any of the row's)."""
    commands, mentions = set(), []
    for first, rest in _reference_rows():
        row, command = [], None
        for span in re.findall(r"`([^`]+)`", first):
            command = _command_of(span, command)
            assert command is not None, f"README names an unknown command: {span!r}"
            row.append(command)
            mentions += [([command], option) for option in OPTION.findall(span)]
        commands.update(row)
        for span in re.findall(r"`([^`]+)`", rest):
            named = None if span.startswith("-") else _command_of(span, None)
            mentions += [([named] if named else row, option) for option in OPTION.findall(span)]
    return commands, mentions


def _options(command: click.Command) -> set[str]:
    return {name for param in command.params if isinstance(param, click.Option)
            for name in param.opts + param.secondary_opts} | {"--help", "-h"}


def test_readme_lists_every_command_and_no_other():
    assert _documented()[0] == set(COMMANDS)


def test_clapdex_help_lists_the_same_top_level_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = set(re.findall(r"^  ([a-z][\w-]*)\s", result.output.split("Commands:")[1], re.M))
    assert listed == {path[0] for path in COMMANDS}


def test_every_option_the_readme_mentions_exists():
    mentions = _documented()[1]
    assert len(mentions) > 20  # the parser found the options
    unknown = [(" / ".join(" ".join(c) for c in commands), option) for commands, option in mentions
               if not any(option in _options(COMMANDS[c]) for c in commands)]
    assert unknown == []
