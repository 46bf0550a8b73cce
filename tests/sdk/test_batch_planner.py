"""The batch planner: when a batch runs and what goes in it, with a clock passed in."""

import inspect

import pytest

from weir.batch_planner import BatchPlanner, batch_arguments, check_results
from weir.exceptions import RayServeException


def test_a_full_batch_goes_at_once() -> None:
    planner: BatchPlanner[int] = BatchPlanner(max_batch_size=3, batch_wait_timeout_s=10)
    planner.add(1, now=0.0)
    planner.add(2, now=0.0)
    assert planner.take(now=0.0) is None
    planner.add(3, now=0.0)
    planner.add(4, now=0.0)
    assert planner.take(now=0.0) == [1, 2, 3]
    assert planner.running == 1


def test_a_partial_batch_goes_when_its_first_item_waited_the_timeout() -> None:
    planner: BatchPlanner[str] = BatchPlanner(max_batch_size=8, batch_wait_timeout_s=0.5)
    planner.add("a", now=1.0)
    planner.add("b", now=1.4)
    assert planner.next_deadline() == 1.5
    assert planner.take(now=1.49) is None
    assert planner.take(now=1.5) == ["a", "b"]
    assert planner.next_deadline() is None
    assert planner.take(now=9.0) is None


def test_zero_timeout_runs_whatever_waits() -> None:
    planner: BatchPlanner[int] = BatchPlanner(max_batch_size=8, batch_wait_timeout_s=0)
    planner.add(1, now=5.0)
    assert planner.take(now=5.0) == [1]


def test_no_more_batches_than_max_concurrent_and_the_rest_waits_for_finish() -> None:
    planner: BatchPlanner[int] = BatchPlanner(max_batch_size=2, batch_wait_timeout_s=0.1)
    for i in range(5):
        planner.add(i, now=0.0)
    assert planner.take(now=0.0) == [0, 1]
    assert planner.take(now=0.0) is None  # full, but one batch is running
    assert planner.next_deadline() is None
    planner.finish()
    assert planner.take(now=0.0) == [2, 3]
    planner.finish()
    assert planner.take(now=0.05) is None
    assert planner.take(now=0.1) == [4]


def test_two_concurrent_batches() -> None:
    planner: BatchPlanner[int] = BatchPlanner(max_batch_size=1, batch_wait_timeout_s=1,
                                              max_concurrent_batches=2)
    for i in range(3):
        planner.add(i, now=0.0)
    assert [planner.take(now=0.0), planner.take(now=0.0), planner.take(now=0.0)] == [
        [0], [1], None]


def test_batch_size_fn_measures_the_batch() -> None:
    planner: BatchPlanner[str] = BatchPlanner(max_batch_size=10, batch_wait_timeout_s=1,
                                              batch_size_fn=lambda b: sum(map(len, b)))
    planner.add("aaaa", now=0.0)
    planner.add("bbbb", now=0.0)
    assert planner.take(now=0.0) is None  # 8 of 10
    planner.add("ccc", now=0.0)  # 11: the first two go, "ccc" waits
    assert planner.take(now=0.0) == ["aaaa", "bbbb"]
    planner.finish()
    planner.add("x" * 20, now=0.0)  # too big on its own after "ccc": "ccc" alone goes
    assert planner.take(now=0.0) == ["ccc"]
    planner.finish()
    assert planner.take(now=0.0) == ["x" * 20]  # alone over the limit still runs


def test_setters_apply_to_the_next_batch() -> None:
    planner: BatchPlanner[int] = BatchPlanner(max_batch_size=4, batch_wait_timeout_s=1)
    planner.add(1, now=0.0)
    planner.add(2, now=0.0)
    planner.set_max_batch_size(2)
    assert planner.take(now=0.0) == [1, 2]
    planner.finish()
    planner.add(3, now=0.0)
    planner.set_batch_wait_timeout_s(0.2)
    assert planner.next_deadline() == 0.2
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1, got 0"):
        planner.set_max_batch_size(0)


@pytest.mark.parametrize(("options", "error"), [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_batch_size": 2.5}, "max_batch_size"),
    ({"batch_wait_timeout_s": -1}, "batch_wait_timeout_s"),
    ({"batch_wait_timeout_s": "1"}, "batch_wait_timeout_s"),
    ({"max_concurrent_batches": 0}, "max_concurrent_batches"),
    ({"batch_size_fn": 3}, "batch_size_fn"),
])
def test_bad_options_name_themselves(options: dict[str, object], error: str) -> None:
    with pytest.raises((TypeError, ValueError), match=error):
        BatchPlanner(**options)  # type: ignore[arg-type]


def test_batch_arguments_make_one_list_per_parameter() -> None:
    def handle(items: list[int], scale: list[int], *, tag: list[str]) -> None: ...

    signature = inspect.signature(handle)
    calls = [signature.bind(1, 10, tag="a"), signature.bind(items=2, scale=20, tag="b")]
    assert batch_arguments(signature, calls) == ([[1, 2], [10, 20]], {"tag": ["a", "b"]})


def test_check_results_names_the_function_and_the_lengths() -> None:
    assert check_results((1, 2), 2, "Model.handle") == [1, 2]
    with pytest.raises(RayServeException, match=r"Model\.handle returned 1 results for a "
                                                r"batch of 2 inputs"):
        check_results([1], 2, "Model.handle")
    with pytest.raises(RayServeException, match=r"Model\.handle returned NoneType, not a list"):
        check_results(None, 2, "Model.handle")
