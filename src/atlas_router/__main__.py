"""``python -m atlas_router`` runs the CLI."""

from atlas_router.cli import main

main()
