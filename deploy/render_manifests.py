"""Render the Helm chart with its default values into deploy/kubernetes/, for users without
Helm (`kubectl apply -n weir -f deploy/kubernetes/`). tests/deploy/test_chart.py checks
the files are what the chart renders now; after changing the chart, run:

    python deploy/render_manifests.py

Needs `helm-python-sdk` (in the dev extra), which bundles Helm's library.
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parent
CHART = DEPLOY / "helm" / "weir"
MANIFESTS = DEPLOY / "kubernetes"
#: The release the plain manifests stand for.
RELEASE = "weir"
NAMESPACE = "weir"
#: The plain manifests' token Secret holds this; the chart makes a random one.
TOKEN_PLACEHOLDER = "replace-me-with-a-random-token"
HEADER = ("# Rendered from deploy/helm/weir with its default values (release {release}, "
          "namespace {namespace})\n# by deploy/render_manifests.py: edit the chart, not "
          "this file.\n")


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE,
           namespace: str = NAMESPACE) -> dict[str, str]:
    """The chart's manifests by template file name (no NOTES, no empty ones), trailing
    spaces removed, the generated token replaced by a placeholder."""
    import helm_python as helm

    out = {}
    for path, text in helm.Chart.load(CHART).render(values, name=name,
                                                     namespace=namespace).items():
        filename = path.rsplit("/", 1)[-1]
        text = "\n".join(line.rstrip() for line in text.strip().splitlines())
        if filename == "NOTES.txt" or not text.strip():
            continue
        if filename == "token-secret.yaml":
            placeholder = base64.b64encode(TOKEN_PLACEHOLDER.encode()).decode()
            text = re.sub(r"(?m)^(  token: ).*$", rf"\g<1>{placeholder}", text)
        out[filename] = text + "\n"
    return out


def expected_files() -> dict[str, str]:
    """What deploy/kubernetes/ should hold: the default render with a header."""
    head = HEADER.format(release=RELEASE, namespace=NAMESPACE)
    return {name: head + text for name, text in render().items()}


def main() -> None:
    """Write deploy/kubernetes/ afresh."""
    MANIFESTS.mkdir(exist_ok=True)
    for old in MANIFESTS.glob("*.yaml"):
        old.unlink()
    for name, text in expected_files().items():
        (MANIFESTS / name).write_text(text)
    sys.stdout.write(f"wrote {len(expected_files())} files to {MANIFESTS}\n")


if __name__ == "__main__":
    main()
