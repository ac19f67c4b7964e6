"""`clapdex roots [list] | set NAME=PATH | remove NAME`: the index's named roots (files under a
root are stored relative to it, so the collection can move; docs/indexing.md, "Roots")."""

from __future__ import annotations

import click

from clapdex.cli.common import emit_json, emit_ndjson, index_option, json_option, resolve_index_path
from clapdex.cli.format import display_path, plural
from clapdex.errors import ClapdexError


def _index(index_path):
    from clapdex import Index

    return Index(resolve_index_path(index_path))


def _line(info) -> str:
    where = display_path(info.effective)
    notes = [plural(info.files, "file")]
    if info.from_env:
        notes.append(f"from ${info.env_var}; stored: {display_path(info.location)}")
    if not info.exists:
        notes.append(f"MISSING here: correct ${info.env_var}" if info.from_env else
                     f"MISSING here: clapdex roots set {info.name}=PATH or ${info.env_var}")
    return f"{info.name:<12} {where}  ({'; '.join(notes)})"


@click.group("roots", invoke_without_command=True)
@index_option
@json_option
@click.pass_context
def roots_group(ctx, index_path, as_json) -> None:
    """Named roots: files under a root are stored relative to it, so the index keeps working when
    the collection is mounted elsewhere (`clapdex roots set NAME=NEW_PATH`, or
    $CLAPDEX_ROOT_<NAME> for one process). Without a subcommand: list them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command, index_path=index_path, as_json=as_json)


@roots_group.command("list")
@index_option
@json_option
def list_command(index_path, as_json):
    """The roots: name, location (here), files under it."""
    roots = _index(index_path).roots()
    if as_json:
        emit_ndjson(roots)
        return
    if not roots:
        click.echo("no roots (every file is stored by its absolute path)")
    for info in roots:
        click.echo(_line(info))


@roots_group.command("set")
@click.argument("spec", metavar="NAME=PATH")
@index_option
@json_option
def set_command(spec, index_path, as_json):
    """Define the root NAME at PATH, or move it there (no file row changes). Files stored with
    absolute paths under PATH become relative to it."""
    from clapdex.storage.roots import parse_spec

    name, location = parse_spec(spec)
    if name is None:
        raise ClapdexError(f"give the root as NAME=PATH, not {spec!r}")
    info = _index(index_path).set_root(name, location)
    if as_json:
        emit_json(info)
    else:
        click.echo(_line(info))


@roots_group.command("remove")
@click.argument("name")
@index_option
def remove_command(name, index_path):
    """Forget the root NAME: its files are stored by their absolute paths again."""
    count = _index(index_path).remove_root(name)
    click.echo(f"removed root {name} ({plural(count, 'file')} now stored by absolute path)")


COMMANDS = [roots_group]
