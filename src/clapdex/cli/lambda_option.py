"""An option class whose help shows clapdex.concepts.decompose.DEFAULT_LAMBDA's value.

The help text holds "{default_lambda}", filled in only when help is shown: importing the
decompose module loads the solver and numba (~0.1 s), which every CLI command, `--help`
included, would otherwise pay at start-up.
"""

from __future__ import annotations

import click


class DefaultLambdaHelp(click.Option):
    """click.Option whose help may say "{default_lambda}" (formatted like 0.05)."""

    def get_help_record(self, ctx: click.Context):
        if self.help and "{default_lambda}" in self.help:
            from clapdex import DEFAULT_LAMBDA

            self.help = self.help.replace("{default_lambda}", f"{DEFAULT_LAMBDA:g}")
        return super().get_help_record(ctx)
