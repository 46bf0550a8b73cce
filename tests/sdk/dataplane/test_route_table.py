"""Route prefix matching."""

from weir.dataplane.route_table import RouteEntry, match_route

ROUTES = [RouteEntry("/", "root", "A"), RouteEntry("/api", "api", "B"),
          RouteEntry("/api/v2", "v2", "C")]


def test_longest_prefix_on_segment_boundary() -> None:
    assert match_route(ROUTES, "/api/v2/x").app == "v2"  # type: ignore[union-attr]
    assert match_route(ROUTES, "/api/v2").app == "v2"  # type: ignore[union-attr]
    assert match_route(ROUTES, "/api/v3").app == "api"  # type: ignore[union-attr]
    assert match_route(ROUTES, "/apis").app == "root"  # type: ignore[union-attr]
    assert match_route(ROUTES, "/").app == "root"  # type: ignore[union-attr]


def test_no_match_without_root() -> None:
    assert match_route(ROUTES[1:], "/other") is None
