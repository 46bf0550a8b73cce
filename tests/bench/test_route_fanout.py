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
