"""The fan-out bench measures what it says: each form of a load change rebuilds the same
table, and the compact one is the smaller on the wire."""

from __future__ import annotations

from bench.route_fanout import measure


def test_the_compact_form_of_a_load_change_is_smaller_and_each_step_is_timed() -> None:
    whole = measure(300, 0.05, compact=False, repeat=1)
    compact = measure(300, 0.05, compact=True, repeat=1)
    assert (whole["form"], compact["form"]) == ("whole", "compact")
    assert compact["bytes"] * 3 < whole["bytes"]
    for row in (whole, compact):
        assert all(row[k] >= 0 for k in ("serialize_us", "parse_us", "apply_us", "copy_us",
                                          "on_table_us"))


def test_a_change_of_load_alone_costs_the_proxy_far_less_than_a_change_of_replicas() -> None:
    # A load change sets a few replicas' counts; a replica added rebuilds the router (at
    # 300 replicas about 80 times the cost: a factor 5 holds on a busy machine).
    added = measure(300, 0.0, compact=False, repeat=7)
    load = measure(300, 0.05, compact=True, repeat=7)
    assert load["on_table_us"] * 5 < added["on_table_us"]
