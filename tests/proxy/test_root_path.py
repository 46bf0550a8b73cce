"""http_options.root_path: which paths are under it, and what routes see of them."""

from weir.proxy.http_app import under_root


def test_without_a_root_path_every_path_is_itself() -> None:
    assert under_root("/app/x", "") == "/app/x"


def test_paths_under_the_root_lose_it() -> None:
    assert under_root("/gw", "/gw") == "/"
    assert under_root("/gw/", "/gw") == "/"
    assert under_root("/gw/app/x", "/gw") == "/app/x"


def test_paths_outside_the_root_are_not_served() -> None:
    assert under_root("/app/x", "/gw") is None
    assert under_root("/gwx/app", "/gw") is None
