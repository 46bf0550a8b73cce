"""`python -m weir.replica`: one replica process, started by a controller's launcher."""

from weir.replica.main import main

main()
