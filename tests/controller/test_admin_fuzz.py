"""Fuzzing the admin API's inputs (hypothesis): Deploy, GetConfig, GetStatus, DeleteApps and
GetEvents on a real AdminService over a memory etcd, with any config (near the schema or
not), any app names, any by-value payloads and limits. Each call answers or refuses with a
gRPC status whose details say why; no other exception escapes to gRPC (which would answer
an opaque UNKNOWN)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.sdk.config.test_config_fuzz import documents, json_values
from weir.controller.admin import AdminService
from weir.controller.leader import Leader
from weir.etcd.memory_store import MemoryStore
from weir.protos import weir_pb2 as pb

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Refusals a caller can act on; anything else (UNKNOWN, INTERNAL) is a bug.
CLEAR_REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                  grpc.StatusCode.ABORTED}


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class FakeContext:
    """What the servicer uses of grpc.aio.ServicerContext: abort raises, as gRPC's does."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)


def _no_local_code(doc: Any) -> Any:
    # A working_dir is hashed at deploy: a fuzzed "/" would read the whole disk.
    if isinstance(doc, dict):
        for app in doc.get("applications") or []:
            if isinstance(app, dict):
                app.pop("runtime_env", None)
    return doc


#: Configs the schema takes (so that deploys reach etcd), with fuzzed deployment options.
valid_configs = st.builds(
    lambda app_names, deps: {"applications": [
        {"name": n, "route_prefix": f"/{i}", "import_path": "tests.e2e.apps.basic:Echo",
         "deployments": deps} for i, n in enumerate(app_names)]},
    st.lists(st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True), min_size=1, max_size=2,
             unique=True),
    st.lists(st.fixed_dictionaries({"name": st.sampled_from(["Echo", "Other"])},
                                   optional={"num_replicas": json_values,
                                             "user_config": json_values,
                                             "ray_actor_options": json_values}),
             max_size=1))
names = st.text(max_size=12)
config_texts = st.one_of(valid_configs.map(json.dumps),
                         documents.map(_no_local_code).map(json.dumps),
                         json_values.map(_no_local_code).map(json.dumps),
                         st.text(max_size=50))
calls = st.one_of(
    st.builds(lambda c, p, d, apps: ("Deploy", pb.DeployRequest(
        config_json=c, partial=p, dry_run=d, pickled_apps=apps)),
        config_texts, st.booleans(), st.booleans(),
        st.dictionaries(names, st.binary(max_size=20) | st.just(b'{"x": 1}'), max_size=2)),
    st.builds(lambda n, h, r, lim: ("GetConfig", pb.GetConfigRequest(
        name=n, history=h, revision=r, history_limit=lim)),
        names, st.booleans(), st.integers(-2**63, 2**63 - 1), st.integers(-2**31, 2**31 - 1)),
    st.builds(lambda n: ("GetStatus", pb.GetStatusRequest(name=n)), names),
    st.builds(lambda ns: ("DeleteApps", pb.DeleteAppsRequest(names=ns)),
              st.lists(names, max_size=3)),
    st.builds(lambda n: ("GetEvents", pb.GetEventsRequest(limit=n)),
              st.integers(-2**31, 2**31 - 1)),
)


async def run_calls(sequence: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    store = MemoryStore()
    leader = Leader(store, python_executable=sys.executable, address="127.0.0.1:1")
    service = AdminService(store, lambda: leader, lambda: "127.0.0.1:1", lambda: None)
    outcomes = []
    for method, request in sequence:
        try:
            reply = await getattr(service, method)(request, FakeContext())
        except Aborted as exc:
            assert exc.code in CLEAR_REFUSALS and exc.details.strip(), (method, exc.code,
                                                                        exc.details)
            outcomes.append((method, exc.code))
            continue
        assert type(reply).__name__.endswith("Reply"), reply
        outcomes.append((method, "ok"))
    await leader.builder.stop()
    return outcomes


def _deploy(apps: list[tuple[str, str]], partial: bool = False,
            pickled: dict[str, bytes] | None = None) -> tuple[str, pb.DeployRequest]:
    config = {"applications": [{"name": n, "route_prefix": p,
                                "import_path": "tests.e2e.apps.basic:Echo"} for n, p in apps]}
    return ("Deploy", pb.DeployRequest(config_json=json.dumps(config), partial=partial,
                                       pickled_apps=pickled or {}))


@FUZZ
@given(st.lists(calls, min_size=1, max_size=4))
# The failures fuzzing found, kept as examples.
@example([_deploy([("a", "/a")], pickled={"a": b"\x80"})])
@example([_deploy([("a0", "/0")]), _deploy([("a", "/0")], partial=True)])
def test_admin_calls_answer_or_refuse_clearly(sequence: list[tuple[str, Any]]) -> None:
    asyncio.run(run_calls(sequence))
