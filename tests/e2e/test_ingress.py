"""`@serve.ingress` with Starlette and FastAPI apps, through the proxy of a real cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.apps.ingress_apps import shutdown_mark
from tests.e2e.conftest import RunningCluster, wait_for

APPS = {"shop": "starlette_ingress", "api": "fastapi_ingress", "built": "built_ingress"}


@pytest.fixture(scope="module")
def ingress(cluster: RunningCluster) -> Iterator[RunningCluster]:
    for name, target in APPS.items():
        cluster.deploy_app(name, f"tests.e2e.apps.ingress_apps:{target}")
    for name in APPS:
        cluster.wait_status(name, "RUNNING")
    yield cluster


def test_starlette_routes_and_path_params(ingress: RunningCluster) -> None:
    r = ingress.get("/shop/hello/ada")
    assert r.status_code == 200
    assert r.text.startswith("hello ada from ")
    r = ingress.get("/shop/items/7?color=red")
    assert r.json() == {"item_id": 7, "root_path": "/shop", "query": {"color": "red"}}


def test_starlette_201_with_headers_and_cookies(ingress: RunningCluster) -> None:
    r = requests.post(ingress.url + "/shop/items", json={"id": 42}, timeout=10,
                      allow_redirects=False)
    assert r.status_code == 201
    assert r.json() == {"created": {"id": 42}}
    assert r.headers["x-created-by"] == "starlette"
    # url_for knows the route prefix (root_path): the Location points back through it.
    assert r.headers["location"] == ingress.url + "/shop/items/42"
    assert r.cookies["session"] == "s3cr3t"
    assert r.cookies["theme"] == "dark"
    assert "httponly" in r.headers["set-cookie"].lower()


def test_the_apps_own_404(ingress: RunningCluster) -> None:
    r = ingress.get("/shop/nothing/here")
    assert r.status_code == 404
    assert r.text == "Not Found"  # Starlette's, not the proxy's "Path ... not found"
    r = ingress.get("/shop/items/not-an-int")
    assert r.status_code == 404


def test_starlette_streaming_response(ingress: RunningCluster) -> None:
    with requests.get(ingress.url + "/shop/numbers?n=5", stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["x-stream"] == "yes"
        assert r.headers["content-type"].startswith("text/plain")
        assert "".join(r.iter_content(decode_unicode=True)) == "0\n1\n2\n3\n4\n"


def test_fastapi_class_routes_use_the_instance(ingress: RunningCluster) -> None:
    assert ingress.get("/api/greet/ada").json() == {"message": "Hello, ada."}
    assert ingress.get("/api/greet/bob?excited=true").json() == {"message": "Hello, bob!"}
    assert ingress.get("/api/health").json() == {"status": "ok"}


def test_fastapi_json_body_and_state(ingress: RunningCluster) -> None:
    r = requests.put(ingress.url + "/api/items/1", timeout=10,
                     json={"name": "pen", "price": 1.5, "tags": ["office"]})
    assert r.status_code == 201
    # `total` comes from a base class through super(): the class travelled by value.
    assert r.json() == {"item_id": 1, "count": 1, "name": "pen", "price": 1.5,
                        "tags": ["office"], "total": 1.5}
    assert ingress.get("/api/items/1").json() == {"name": "pen", "price": 1.5,
                                                  "tags": ["office"]}


def test_fastapi_errors_pass_through(ingress: RunningCluster) -> None:
    r = requests.put(ingress.url + "/api/items/2", json={"name": "x", "price": -1}, timeout=10)
    assert (r.status_code, r.json()) == (422, {"detail": "price must be >= 0"})
    r = requests.put(ingress.url + "/api/items/2", json={"price": "free"}, timeout=10)
    assert r.status_code == 422  # pydantic validation, FastAPI's own error body
    assert {e["loc"][-1] for e in r.json()["detail"]} == {"name", "price"}
    r = ingress.get("/api/items/999")
    assert (r.status_code, r.json()) == (404, {"detail": "no item 999"})
    assert r.headers["x-missing"] == "999"
    assert ingress.get("/api/items/abc").status_code == 422


def test_fastapi_lifespan_ran_in_the_replica(ingress: RunningCluster) -> None:
    r = ingress.get("/api/model")
    assert r.status_code == 200
    assert r.json().startswith("loaded in ")


def test_fastapi_route_prefix_is_the_root_path(ingress: RunningCluster) -> None:
    assert ingress.get("/api/where").json() == {
        "path": "/api/where", "root_path": "/api",
        "docs": ingress.url + "/api/greet/x"}
    schema = ingress.get("/api/openapi.json").json()
    assert set(schema["paths"]) >= {"/greet/{name}", "/items/{item_id}", "/health"}
    params = schema["paths"]["/greet/{name}"]["get"]["parameters"]
    assert [p["name"] for p in params] == ["name", "excited"]  # no `self`
    assert ingress.get("/api/docs").status_code == 200


def test_an_app_built_in_the_replica(ingress: RunningCluster) -> None:
    r = ingress.get("/built/")
    assert r.status_code == 200
    assert r.json()["built_in"] > 0



def test_http_options_root_path_mounts_every_route(ingress: RunningCluster) -> None:
    """Ray's http_options.root_path: routes live under it and the app's root_path starts
    with it (FastAPI's url_for and docs follow); the proxy's own endpoints stay put."""
    ingress.set_root_path("/gw")
    try:
        wait_for(lambda: ingress.get("/gw/api/where").status_code == 200, 15,
                 "the proxy to serve under /gw")
        assert ingress.get("/gw/api/where").json() == {
            "path": "/gw/api/where", "root_path": "/gw/api",
            "docs": ingress.url + "/gw/api/greet/x"}
        assert ingress.get("/api/where").status_code == 404
        assert "/gw/api/openapi.json" in ingress.get("/gw/api/docs").text
        assert ingress.get("/gw/api/openapi.json").status_code == 200
        assert ingress.get("/gw/shop/items/7").json()["root_path"] == "/gw/shop"
        assert ingress.get("/-/healthz").status_code == 200
    finally:
        ingress.set_root_path("")
        wait_for(lambda: ingress.get("/api/where").status_code == 200, 15,
                 "the proxy to serve at / again")


def test_fastapi_lifespan_shutdown_runs_when_the_replica_stops(ingress: RunningCluster) -> None:
    pid = int(ingress.get("/api/model").json().rsplit(" ", 1)[1])
    mark = Path(shutdown_mark(pid))
    mark.unlink(missing_ok=True)
    ingress.client.delete_apps(["api"])
    try:
        wait_for(mark.exists, 30, "the lifespan shutdown to run in the stopping replica")
    finally:
        mark.unlink(missing_ok=True)

