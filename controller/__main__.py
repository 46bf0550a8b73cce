"""`python -m weir.controller`: one controller process (leader or standby)."""

import sys

from weir.warm_process import start_warm

# The build child for a first term, started before this process's own imports (0.3-0.5 s):
# a cluster that just started deploys ~0.1 s after its controller leads, and a child
# started then would still be importing. A controller that finds a leader lets it go.
# (Not app_builder.BUILD_MODULE: importing that module is the cost this avoids.)
first_build_child = start_warm(sys.executable, "weir.build")

from weir.controller.main import main  # noqa: E402

main(first_build_child=first_build_child)
