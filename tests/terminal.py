"""Run the `weir` command as a user at a terminal would: its stdin a pseudo-terminal.

Commands that ask before destroying something ask only when a person can answer (stdin is a
terminal), so a test of the question needs a real one, not a pipe.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def weir_at_terminal(*args: str, answer: str, env: Mapping[str, str] | None = None,
                     timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `weir ARGS` with a pseudo-terminal as stdin holding `answer` (e.g. "n\\n")."""
    primary, secondary = pty.openpty()
    try:
        os.write(primary, answer.encode())
        proc = subprocess.run([sys.executable, "-m", "weir.cli", *args], stdin=secondary,
                              capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                              env=dict(env) if env is not None else None)
    finally:
        os.close(secondary)
        os.close(primary)
    return proc
