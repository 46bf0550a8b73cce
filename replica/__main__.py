"""`python -m weir.replica`: one replica process, started by a node agent."""

from weir.replica.main import main

main()
