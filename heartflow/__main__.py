"""`python -m heartflow` runs the CLI."""

from heartflow.cli.app import main

main()
