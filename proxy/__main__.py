"""`python -m weir.proxy`: one HTTP proxy process."""

from weir.proxy.main import main

main()
