"""``python -m fh_screen.cli`` runs the command line."""

from fh_screen.cli import main

main()
