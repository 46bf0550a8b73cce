"""What the CLI draws while it waits or watches: `weir deploy --wait`'s progress (each
deployment's replicas coming up, under a spinner) and `weir status --watch` (the status,
redrawn in place).

On a terminal both redraw in place (rich's Live). Piped or logged, they print instead:
`--watch` a stream of YAML documents (`---` between them), `--wait` a line each time the
progress changes, so that a log shows the steps rather than control codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from weir.cli.deploy_wait import DeployProgress

#: How often `weir status --watch` redraws by default, seconds.
WATCH_INTERVAL_S = 2.0


def progress_lines(applications: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """One line per application waited on, one per deployment with its replicas by state
    ("Echo: UPDATING, 1 RUNNING, 1 STARTING"). Pure."""
    lines = []
    for name in names:
        app = applications.get(name)
        if app is None:
            lines.append(f"{name}: waiting for the controller to take the config")
            continue
        status = app.get("app_status", {})
        message = status.get("message", "")
        lines.append(f"{name}: {status.get('status', '?')}" + (f" ({message})" if message else ""))
        for dep in app.get("deployment_statuses", []):
            counts = ", ".join(f"{n} {state}"
                               for state, n in sorted(dep.get("replica_states", {}).items()))
            lines.append(f"  {dep['name']}: {dep.get('status', '?')}"
                         + (f", {counts}" if counts else ", no replicas yet"))
    return lines


class DeployView:
    """`weir deploy --wait`'s progress: a `ProgressHook` for `wait_for_deploy`."""

    def __init__(self, names: Sequence[str], console: Console) -> None:
        self.names, self.console = list(names), console
        self.started = time.monotonic()
        self._last: list[str] = []
        self._spinner = Spinner("dots", text="waiting for the deploy")
        self._live: Live | None = None
        if console.is_terminal:
            self._live = Live(self._spinner, console=console, transient=True,
                              refresh_per_second=10)

    def __enter__(self) -> DeployView:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._live is not None:
            self._live.stop()
        if self._last:  # the last picture stays on screen (and in logs, it was printed)
            if self._live is not None:
                self.console.print("\n".join(self._last), highlight=False)

    def __call__(self, applications: Mapping[str, Any], progress: DeployProgress) -> None:
        lines = progress_lines(applications, self.names)
        if self._live is not None:
            waited = time.monotonic() - self.started
            waiting = ", ".join(progress.waiting_for) or "the deploy"
            self._spinner.update(text=f"waiting for {waiting} ({waited:.0f} s)")
            self._live.update(Group(self._spinner, Text("\n".join(lines))))
        elif lines != self._last:
            self.console.print("\n".join(lines), highlight=False)
        self._last = lines


def watch(render: Callable[[], str], console: Console, interval: float = WATCH_INTERVAL_S,
          should_stop: Callable[[float], bool] | None = None) -> None:
    """Redraw `render()` every `interval` seconds until Ctrl-C (or `should_stop(interval)`,
    which waits, returns True). On a terminal it redraws in place; otherwise each drawing
    is printed as one YAML document of a stream."""
    stop = should_stop or _sleep_then_go_on
    if console.is_terminal:
        with Live(Text(render()), console=console, auto_refresh=False,
                  screen=False) as live:
            while not stop(interval):
                live.update(Text(render()), refresh=True)
        return
    first = True
    while True:
        console.print(("" if first else "---\n") + render(), end="", highlight=False,
                      markup=False, soft_wrap=True)
        console.file.flush()
        first = False
        if stop(interval):
            return


def _sleep_then_go_on(interval: float) -> bool:
    time.sleep(interval)
    return False
