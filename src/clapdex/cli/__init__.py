"""The `clapdex` command: a thin click layer over the Python API.

Each verb lives in a module of this package, which exposes COMMANDS (a list of click commands or
groups); this file only gathers them.
"""

from __future__ import annotations

import click

from clapdex import __version__
from clapdex.cli import (audit, cache, evaluate, explain, index, model, roots, search, serve,
                         vocab)
from clapdex.cli.common import SafeGroup


@click.group(cls=SafeGroup, context_settings={"help_option_names": ["-h", "--help"],
                                       "max_content_width": 120})
@click.version_option(__version__, prog_name="clapdex")
def main() -> None:
    """Search and audit audio collections through named sound concepts."""


for _module in (model, vocab, index, roots, search, explain, audit, evaluate, serve, cache):
    for _command in _module.COMMANDS:
        main.add_command(_command)
