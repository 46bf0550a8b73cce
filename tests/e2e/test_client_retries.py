"""The seed's client-side practice (examples/client_retries.py) against an app that sheds."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from examples.client_retries import production_session
from tests.e2e.conftest import RunningCluster


def test_retrying_clients_all_succeed_where_plain_ones_are_shed(cluster: RunningCluster) -> None:
    cluster.deploy_app("busy", "tests.e2e.apps.shedding:app")
    cluster.wait_status("busy", "RUNNING")
    url = cluster.url + "/busy"
    with ThreadPoolExecutor(6) as pool:
        plain = list(pool.map(lambda _: requests.get(url, timeout=10).status_code, range(6)))
    assert plain.count(503) >= 3, "without retries, requests beyond 1 + 1 are shed"
    with ThreadPoolExecutor(6) as pool:
        retried = list(pool.map(lambda _: production_session().get(url, timeout=10),
                                range(6)))
    assert [r.status_code for r in retried] == [200] * 6
