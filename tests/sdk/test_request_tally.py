"""weir.request_tally: one record per label values gives a counter, an error counter and a
latency histogram that agree with each other, with the status kept or summed away."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from weir.request_tally import RequestTally


def tally(registry: CollectorRegistry, *, status_label: bool) -> RequestTally:
    return RequestTally(
        requests=("t_requests", "r"), errors=("t_errors", "e"), latency=("t_latency_ms", "l"),
        labels=("who", "status") if status_label else ("replica", "who"),
        error_labels=("who", "code") if status_label else ("replica", "who"),
        buckets=(1.0, 10.0), is_error=lambda s: s != "OK", status_label=status_label,
        prefix=(lambda: ()) if status_label else (lambda: ("r1",)), registry=registry)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[str, ...]], float]:
    """Each sample by name and label values, in the families' label order (le last)."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            order = ("replica", "who", "status", "code", "le")
            values = tuple(s.labels[k] for k in order if k in s.labels)
            out[(s.name, values)] = s.value
    return out


def test_the_status_as_a_label() -> None:
    registry = CollectorRegistry()
    t = tally(registry, status_label=True)
    for ms in (0.5, 1.0, 5.0, 50.0):
        t.observe(("a", "OK"), ms)
    t.observe(("a", "UNAVAILABLE"), 0.1)
    got = samples(registry)
    assert got[("t_requests_total", ("a", "OK"))] == 4
    assert got[("t_errors_total", ("a", "UNAVAILABLE"))] == 1
    assert ("t_errors_total", ("a", "OK")) not in got
    # Bounds are inclusive (le), cumulative, and +Inf is the count.
    assert [got[("t_latency_ms_bucket", ("a", "OK", le))] for le in ("1.0", "10.0", "+Inf")] \
        == [2, 3, 4]
    assert got[("t_latency_ms_count", ("a", "OK"))] == 4
    assert got[("t_latency_ms_sum", ("a", "OK"))] == 56.5


def test_the_status_summed_away_and_a_prefix() -> None:
    registry = CollectorRegistry()
    t = tally(registry, status_label=False)
    t.observe(("a", "OK"), 2.0)
    t.observe(("a", "ERROR"), 20.0)
    t.observe(("b", "OK"), 2.0)
    got = samples(registry)
    assert got[("t_requests_total", ("r1", "a"))] == 2
    assert got[("t_errors_total", ("r1", "a"))] == 1
    assert ("t_errors_total", ("r1", "b")) not in got
    assert got[("t_latency_ms_bucket", ("r1", "a", "10.0"))] == 1
    assert got[("t_latency_ms_sum", ("r1", "a"))] == 22.0
    # Scraping changes nothing.
    assert samples(registry) == got
