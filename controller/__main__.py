"""`python -m weir.controller`: one controller process (leader or standby)."""

from weir.controller.main import main

main()
