"""`python -m shadoweval` runs the command line."""

from shadoweval.cli import main

main()
