"""``atlas router-file show|migrate``: inspect a router file without loading it, convert old pickles."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from atlas_router.cli.common import print_json

router_file_app = typer.Typer(help="Inspect and migrate saved router files.", no_args_is_help=True)


@router_file_app.command("show")
def show(path: Path = typer.Argument(..., help="Router file.")) -> None:
    """Print a router file's manifest (read as JSON; nothing in the file is built or run)."""
    from atlas_router.routers.persist import read_manifest

    print_json(read_manifest(path))


@router_file_app.command("migrate")
def migrate(
    path: Path = typer.Argument(..., help="Router file in an older format."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the converted file (default: in place)."),
    trust: bool = typer.Option(False, "--trust", help="Read a version 1 file, a pickle that can run code: only for "
                                                      "files you made or trust."),
) -> None:
    """Rewrite a router file in the current data-only format."""
    from atlas_router.routers.persist import FILE_VERSION, migrate_router_file

    written = migrate_router_file(path, out, trusted=trust)
    typer.echo(f"{written}: router file format version {FILE_VERSION} (data only)")


def register(app: typer.Typer) -> None:
    app.add_typer(router_file_app, name="router-file")
