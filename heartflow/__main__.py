"""`python -m heartflow` runs the CLI."""

from heartflow.cli import main

main()
