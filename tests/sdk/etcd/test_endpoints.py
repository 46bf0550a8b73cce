"""weir.etcd.endpoints: what users write as etcd endpoints, and what one gRPC channel dials.

Pure but for name resolution (of "localhost"): nothing here needs an etcd.
"""

from __future__ import annotations

import asyncio

import pytest

from weir.etcd.endpoints import TLSConfig, channel_target, endpoint, parse_endpoints
from weir.etcd.etcd_store import EtcdStore
from weir.etcd.store import StoreError


def test_endpoints_are_parsed_in_every_spelling() -> None:
    assert parse_endpoints("127.0.0.1:2379") == ([("127.0.0.1", 2379)], False)
    assert parse_endpoints("http://a:1, b:2") == ([("a", 1), ("b", 2)], False)
    assert parse_endpoints(["https://a:1", "[::1]:2"]) == ([("a", 1), ("::1", 2)], True)
    assert EtcdStore(["h1:1", "h2:2,h3:3"]).endpoints == ["h1:1", "h2:2", "h3:3"]
    for bad in ("", "nohost", "a:b", "ftp://a:1"):
        with pytest.raises(ValueError):
            parse_endpoints(bad)


def test_an_ipv6_endpoint_is_written_in_brackets() -> None:
    assert endpoint("::1", 2379) == "[::1]:2379"
    assert endpoint("etcd.local", 2379) == "etcd.local:2379"
    assert EtcdStore("[::1]:2379").endpoints == ["[::1]:2379"]


def test_one_endpoint_is_dialled_as_written() -> None:
    target, options = asyncio.run(channel_target([("etcd.local", 2379)], tls=True))
    assert target == "etcd.local:2379"
    assert "grpc.lb_policy_name" not in options
    assert "grpc.ssl_target_name_override" not in options


def test_several_endpoints_make_one_round_robin_target() -> None:
    addresses, secure = parse_endpoints(["127.0.0.1:1", "http://127.0.0.2:2"])
    target, options = asyncio.run(channel_target(addresses, tls=secure))
    assert target == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert options["grpc.lb_policy_name"] == "round_robin"
    # etcd answers pings closer than 5 s with GOAWAY too_many_pings.
    assert options["grpc.keepalive_time_ms"] >= 5000
    target, _ = asyncio.run(channel_target([("::1", 1), ("::1", 2)], tls=False))
    assert target == "ipv6:[::1]:1,[::1]:2"


def test_names_are_resolved_and_tls_checks_the_first_name() -> None:
    target, options = asyncio.run(
        channel_target([("localhost", 1), ("127.0.0.2", 2)], tls=True)
    )
    assert target == "ipv4:127.0.0.1:1,127.0.0.2:2"
    # The certificate names a host; the target holds only addresses.
    assert options["grpc.ssl_target_name_override"] == "localhost"
    _, plain = asyncio.run(channel_target([("localhost", 1), ("127.0.0.2", 2)], tls=False))
    assert "grpc.ssl_target_name_override" not in plain


def test_one_channel_cannot_mix_ipv4_and_ipv6() -> None:
    with pytest.raises(StoreError, match="mix IPv4 and IPv6"):
        asyncio.run(channel_target([("127.0.0.1", 1), ("::1", 2)], tls=False))


def test_tls_files_come_from_the_environment_the_chart_sets() -> None:
    assert TLSConfig.from_environ({}) is None
    assert TLSConfig.from_environ({"WEIR_ETCD_CA_FILE": "/tls/ca.crt"}) == TLSConfig(
        ca_file="/tls/ca.crt")
    both = {"WEIR_ETCD_CA_FILE": "/tls/ca.crt", "WEIR_ETCD_CERT_FILE": "/tls/tls.crt",
            "WEIR_ETCD_KEY_FILE": "/tls/tls.key"}
    assert TLSConfig.from_environ(both) == TLSConfig("/tls/ca.crt", "/tls/tls.crt",
                                                     "/tls/tls.key")
