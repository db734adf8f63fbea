"""The ``atlas`` command line. Each command group lives in its own module and registers itself here.

Errors the user can fix (AtlasError) print one line and exit 2, never a traceback. Every command-line word has
one meaning across the commands (``--json`` a flag, ``--json-out PATH`` a file, ``--router`` a router kind,
``--router-file PATH`` a file); the old spellings are rewritten, with a notice, by ``cli.words``.
"""

from __future__ import annotations

import importlib
import sys

import typer
from typer.core import TyperGroup

from atlas_router.cli.words import rewrite_old_words
from atlas_router.errors import AtlasError


class AtlasGroup(TyperGroup):
    """The ``atlas`` group: a command's old option spellings become the new ones before it parses them."""

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        return name, cmd, rewrite_old_words(name, list(rest))


app = typer.Typer(
    cls=AtlasGroup,
    name="atlas",
    help="Route each query to the best (model, tool) pair.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that define ``register(app)``; order is the order of ``atlas --help``.
COMMAND_MODULES = [
    "atlas_router.cli.demo",
    "atlas_router.cli.ask",
    "atlas_router.cli.pool",
    "atlas_router.cli.tool",
    "atlas_router.cli.collect",
    "atlas_router.cli.judge",
    "atlas_router.cli.records",
    "atlas_router.cli.routing",
    "atlas_router.cli.router_file",
    "atlas_router.cli.serve",
    "atlas_router.cli.rl",
    "atlas_router.cli.calibrate",
    "atlas_router.cli.sweep",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Entry point of the console script: one-line errors for user mistakes."""
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except AtlasError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except Exception as err:  # click usage errors and the like (typer >= 0.22 vendors its own click)
        show, code = getattr(err, "show", None), getattr(err, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
