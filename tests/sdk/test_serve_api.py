"""The public face refuses typos and warns by name for Ray options it ignores: serve.run,
serve.start and DeploymentHandle.options. Nothing here reaches a cluster: a refused call
must fail before connecting (checked), and `_start_config` is the pure part of serve.start."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from weir import context as cluster_context
from weir import runtime_context, serve
from weir.config import ray_options
from weir.exceptions import IgnoredRayOptionWarning
from weir.handle import DeploymentHandle
from weir.serve.config import HTTPOptions, gRPCOptions


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    ray_options.forget_warnings()
    yield
    ray_options.forget_warnings()


@serve.deployment
class Echo:
    def __call__(self, value: Any) -> Any:
        return value


def ignored_warnings(action: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        action()
    return [str(w.message) for w in seen if issubclass(w.category, IgnoredRayOptionWarning)]


def assert_not_connected() -> None:
    assert serve._session.client is None and serve._session.owned is None


# ----------------------------------------------------------------- serve.run / serve.start


def test_run_refuses_a_typo_before_connecting() -> None:
    with pytest.raises(TypeError) as info:
        serve.run(Echo.bind(), nmae="echo")  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("serve.run() got unexpected keyword argument 'nmae' "
                              "(did you mean 'name'?); it accepts: target, blocking, name, "
                              "route_prefix, logging_config, _local_testing_mode, "
                              "external_scaler_enabled")
    assert_not_connected()


def test_start_refuses_a_typo_before_connecting() -> None:
    with pytest.raises(TypeError, match=r"serve.start\(\) got unexpected keyword argument "
                                        r"'http_option' \(did you mean 'http_options'\?\)"):
        serve.start(http_option={"port": 8001})  # type: ignore[arg-type]
    # Ray refuses its old http_host too (it asks for http_options): so does Weir.
    with pytest.raises(TypeError, match="'http_host'"):
        serve.start(http_host="0.0.0.0")  # type: ignore[arg-type]
    assert_not_connected()


def test_run_and_start_keep_rays_positional_order() -> None:
    import inspect

    assert list(inspect.signature(serve.run).parameters)[:7] == [
        "target", "blocking", "name", "route_prefix", "logging_config", "_local_testing_mode",
        "external_scaler_enabled"]
    assert list(inspect.signature(serve.start).parameters)[:4] == [
        "proxy_location", "http_options", "grpc_options", "logging_config"]


def test_start_config_sends_only_what_was_given() -> None:
    assert serve._start_config(None, None) == {"applications": []}
    config = serve._start_config({"port": 8001, "middlewares": ["m.mw:Cls"]},
                                {"grpc_servicer_functions": ["m.pb2_grpc:add_S_to_server"]},
                                [Middleware(GZipMiddleware, minimum_size=10)])
    assert config["http_options"]["port"] == 8001
    first, second = config["http_options"]["middlewares"]
    assert first == "m.mw:Cls"
    assert isinstance(second, dict), "an object travels pickled"
    assert config["grpc_options"] == {
        "grpc_servicer_functions": ["m.pb2_grpc:add_S_to_server"]}
    pickle.dumps(config)


def test_start_takes_rays_config_classes_as_well_as_dicts() -> None:
    config = serve._start_config(HTTPOptions(port=8001, request_timeout_s=3),
                                 gRPCOptions(port=9001))
    assert config["http_options"]["port"] == 8001
    assert config["http_options"]["request_timeout_s"] == 3
    assert config["grpc_options"]["port"] == 9001
    pickle.dumps(config)


def test_get_deployment_handle_defaults_to_the_callers_own_app(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_context, "cluster",
                        lambda: cluster_context.ClusterCoordinates("127.0.0.1:2379"))
    assert serve.get_deployment_handle("Other").app_name == "default"  # a driver
    monkeypatch.setattr(runtime_context, "_replica",
                        runtime_context.ReplicaContext("mine", "Caller", "r1"))
    assert serve.get_deployment_handle("Other").app_name == "mine"
    assert serve.get_deployment_handle("Other", "theirs").app_name == "theirs"


def test_start_warns_for_no_http_option_now_that_root_path_is_acted_on() -> None:
    ray_options.forget_warnings()
    assert ignored_warnings(lambda: [
        serve._warn_ignored_http_options({"root_path": "/api", "keep_alive_timeout_s": 9,
                                          "port": 8001}),
        serve._warn_ignored_http_options(HTTPOptions(root_path="/api"))]) == []


# ----------------------------------------------------------------- DeploymentHandle.options


def test_handle_options_refuses_a_typo() -> None:
    handle = DeploymentHandle("Echo", "app")
    with pytest.raises(TypeError) as info:
        handle.options(method="other")  # type: ignore[arg-type]
    assert "DeploymentHandle.options() got unexpected keyword argument 'method'" in str(
        info.value)
    assert "method_name" in str(info.value) and "multiplexed_model_id" in str(info.value)


def test_handle_options_sets_what_weir_acts_on_silently() -> None:
    handle = DeploymentHandle("Echo", "app")
    seen = ignored_warnings(lambda: handle.options(method_name="m", stream=True, timeout_s=2,
                                                   multiplexed_model_id="m1"))
    assert seen == []
    other = handle.options(method_name="m", stream=True, timeout_s=2, multiplexed_model_id="m1")
    assert (other.method_name, other.stream, other.timeout_s) == ("m", True, 2)
    assert ignored_warnings(lambda: handle.other_method) == []


def test_the_model_id_rides_on_every_call_of_the_handle() -> None:
    handle = DeploymentHandle("Echo", "app").options(multiplexed_model_id="m1")
    # Kept through method access, other options and pickling (handles pass to replicas).
    for same in (handle.predict, handle.options(stream=True),
                 pickle.loads(pickle.dumps(handle))):
        assert same.multiplexed_model_id == "m1"
        assert same._request((), {}, "rid").multiplexed_model_id == "m1"
    assert handle.options(multiplexed_model_id="").multiplexed_model_id == ""
    assert DeploymentHandle("Echo")._request((), {}, "rid").multiplexed_model_id == ""
    with pytest.raises(TypeError, match="multiplexed_model_id"):
        handle.options(multiplexed_model_id=3)  # type: ignore[arg-type]


def test_handle_options_warns_once_for_rays_options_it_ignores() -> None:
    handle = DeploymentHandle("Echo", "app")
    seen = ignored_warnings(lambda: [
        handle.options(_prefer_local_routing=True, use_new_handle_api=True),
        handle.options(_prefer_local_routing=False),
        handle.options(use_new_handle_api=None),  # Ray's default: asks for nothing
    ])
    assert sorted(m.split(":")[0] for m in seen) == [
        "Weir ignores the DeploymentHandle.options() option '_prefer_local_routing'",
        "Weir ignores the DeploymentHandle.options() option 'use_new_handle_api'"]
    with pytest.warns(IgnoredRayOptionWarning) as record:
        same = handle.options(_by_reference=False, request_serialization="pickle")
    assert len(record) == 2
    assert (same.method_name, same.stream) == ("__call__", False)
