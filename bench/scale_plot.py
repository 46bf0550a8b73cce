"""Draw the control-plane scale figures against the number of replicas, one panel each.

    python -m bench.scale_plot --after a-1000.json a-2000.json ... --before b-1000.json \\
        -o docs/scale.png

Each JSON is one run of `bench.control_plane_scale`; a missing figure (a phase that
failed) is left out of its line, and a run whose ramp did not finish is a dotted red line
at its number of replicas. The goal of each figure, where the issue set one, is drawn
as a dashed line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: Figure -> (panel title, the issue's goal or None).
PANELS = {
    "route_push_p99_ms": ("route change to every subscriber, p99 (ms)", 100.0),
    "route_push_median_ms": ("route change to every subscriber, median (ms)", None),
    "report_to_route_p99_ms": ("depth report to every subscriber, p99 (ms)", None),
    "leader_cpu_pct": ("leader CPU, steady state (% of a core)", 25.0),
    "leader_rss_mb": ("leader RSS (MB)", 500.0),
    "max_pass_ms": ("slowest reconcile pass (ms)", 200.0),
    "etcd_writes_per_s": ("etcd writes per second, steady", 50.0),
    "ramp_s": ("deploy N replicas until routed (s)", None),
    "deploy_s": ("rolling update of 1,000 replicas (s)", None),
    "failover_s": ("failover until every replica adopted (s)", 3.0),
}


def load(paths: list[str]) -> list[dict[str, Any]]:
    """The runs, by number of replicas."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    return sorted(runs, key=lambda r: r["replicas"])


def main() -> None:
    """Entry point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(prog="python -m bench.scale_plot")
    parser.add_argument("--after", nargs="+", required=True)
    parser.add_argument("--before", nargs="*", default=[])
    parser.add_argument("--after-label", default="after")
    parser.add_argument("--before-label", default="before")
    parser.add_argument("-o", "--out", required=True)
    opts = parser.parse_args()
    series = {opts.after_label: load(opts.after), opts.before_label: load(opts.before)}
    fig, axes = plt.subplots(2, 5, figsize=(24, 9))
    for ax, (key, (title, goal)) in zip(axes.flat, PANELS.items(), strict=True):
        for label, runs in series.items():
            points = [(r["replicas"], r[key]) for r in runs if r.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=label)
        if goal is not None:
            ax.axhline(goal, linestyle="--", color="grey", label="goal")
        # A run whose replicas never all ran has no figures: say where, not nothing.
        unfinished = sorted({r["replicas"] for runs in series.values() for r in runs
                             if r.get("ramp_s") is None})
        for i, n in enumerate(unfinished):
            ax.axvline(n, linestyle=":", color="red",
                       label="did not finish its ramp" if i == 0 else None)
        if key.startswith(("route_push", "report_to_route")):
            # From tens of ms to the 10 s a missed probe counts as: a line on a linear
            # axis would hide everything under a second.
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("replicas")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Weir control plane at scale (simulated replicas, 100 route subscribers; "
                 "2 shared cores, noisy)")
    fig.tight_layout()
    fig.savefig(opts.out, dpi=80)


if __name__ == "__main__":
    main()
