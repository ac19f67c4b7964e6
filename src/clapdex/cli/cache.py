"""`clapdex cache info | clear`: the cache folder (concept embeddings and other recomputable data)."""

from __future__ import annotations

import click

from clapdex.cli.common import emit_json, json_option
from clapdex.cli.format import display_path, format_bytes


@click.group("cache")
def cache_group() -> None:
    """clapdex's cache folder: everything in it is recomputed when needed."""


@cache_group.command("info")
@json_option
def info_command(as_json):
    """What the cache holds, part by part."""
    from clapdex.cache import cache_info

    info = cache_info()
    if as_json:
        emit_json(info)
        return
    click.echo(f"cache: {display_path(info['folder'])} ({format_bytes(info['bytes'])})")
    for part in info["parts"]:
        click.echo(f"  {part['part']:<17} {format_bytes(part['bytes']):>9} in "
                   f"{part['files']} file{'' if part['files'] == 1 else 's'}: "
                   f"{part['description']}")


@cache_group.command("clear")
@click.argument("parts", nargs=-1)
def clear_command(parts):
    """Remove PARTS of the cache (default: all of it; see `clapdex cache info`)."""
    from clapdex.cache import clear_cache

    freed = clear_cache(list(parts) or None)
    click.echo(f"freed {format_bytes(freed)}")


COMMANDS = [cache_group]
