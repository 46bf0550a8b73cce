"""`python -m weir.cli`."""

from weir.cli.commands import main

main()
