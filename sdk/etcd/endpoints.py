"""Where etcd is and how to dial it: endpoints, TLS, and the gRPC channel's target and options.

Pure but for name resolution: :func:`parse_endpoints` reads what a user writes,
:func:`channel_target` turns the endpoints into what one gRPC channel dials.

* **Several endpoints.** aetcd dials one ``host:port``. Given several endpoints we dial a
  gRPC multi-address target (``ipv4:a:1,b:2,c:3``) with the ``round_robin`` policy, so a
  dead member is skipped by gRPC itself; the write gap of an etcd leader kill is then the
  election (1-1.6 s) plus one call timeout.
* **Channel options.** Keepalive pings are 10 s apart because etcd answers pings closer
  than 5 s with GOAWAY ``too_many_pings``; reconnect backoff is capped at 2 s so a member
  coming back is used at once.
* **TLS**: ``https://`` endpoints or a :class:`TLSConfig`; the channel that uses it is made
  in :mod:`weir.etcd.etcd_connection`, since aetcd only makes insecure channels.
* **Credentials**: an :class:`EtcdCredentials` user of etcd's own authentication (``etcdctl
  user add``, ``auth enable``); :mod:`weir.etcd.etcd_connection` trades it for a token.
  Both come from the environment (the ``WEIR_ETCD_*`` variables below), which is how the
  CLI's ``--etcd-*`` options and the Helm chart's Secrets reach every Weir process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from weir.etcd.store import StoreError, StoreUnavailableError

__all__ = ["EtcdCredentials", "TLSConfig", "channel_target", "endpoint", "parse_endpoints"]

#: The environment that tells every Weir process how to reach etcd securely.
USER_ENV = "WEIR_ETCD_USER"
PASSWORD_ENV = "WEIR_ETCD_PASSWORD"
#: A file holding the password (a mounted Secret), when WEIR_ETCD_PASSWORD is not set.
PASSWORD_FILE_ENV = "WEIR_ETCD_PASSWORD_FILE"
CA_FILE_ENV = "WEIR_ETCD_CA_FILE"
CERT_FILE_ENV = "WEIR_ETCD_CERT_FILE"
KEY_FILE_ENV = "WEIR_ETCD_KEY_FILE"

# etcd refuses pings closer than its --grpc-keepalive-min-time (5 s) with GOAWAY.
_KEEPALIVE_TIME_MS = 10_000
_KEEPALIVE_TIMEOUT_MS = 5_000
_INITIAL_RECONNECT_BACKOFF_MS = 200
_MAX_RECONNECT_BACKOFF_MS = 2_000


@dataclass(frozen=True)
class TLSConfig:
    """TLS towards etcd: a CA bundle (system roots if ``None``) and, for mutual TLS,
    a client certificate and key (both PEM files)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "TLSConfig needs both cert_file and key_file for a client certificate, "
                f"or neither (got cert_file={self.cert_file!r}, key_file={self.key_file!r})"
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TLSConfig | None:
        """TLS as the environment asks (the Helm chart sets these from a mounted Secret):
        WEIR_ETCD_CA_FILE, and WEIR_ETCD_CERT_FILE with WEIR_ETCD_KEY_FILE for mutual TLS.
        None if none is set."""
        env = os.environ if environ is None else environ
        files = [env.get(name) or None for name in (CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV)]
        return cls(*files) if any(files) else None

    def credentials(self) -> grpc.ChannelCredentials:
        """Read the PEM files and build gRPC channel credentials (blocking file reads)."""

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise StoreError(f"cannot read TLS file for etcd: {exc}") from exc

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


@dataclass(frozen=True)
class EtcdCredentials:
    """A user of etcd's authentication, and its password (given, or in a file read when
    the connection opens, so a rotated Secret is read again by a restarted process)."""

    user: str
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None

    def __post_init__(self) -> None:
        if not self.user:
            raise ValueError("EtcdCredentials needs a user name")
        if (self.password is None) == (self.password_file is None):
            raise ValueError(
                f"etcd user {self.user!r} needs a password: give {PASSWORD_ENV} or "
                f"{PASSWORD_FILE_ENV} (exactly one)")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> EtcdCredentials | None:
        """The user the environment names (WEIR_ETCD_USER, with WEIR_ETCD_PASSWORD or
        WEIR_ETCD_PASSWORD_FILE); None if no user is set. Raises ValueError for a user
        without a password, or a password without a user."""
        env = os.environ if environ is None else environ
        user = env.get(USER_ENV) or ""
        password = env.get(PASSWORD_ENV)
        password_file = env.get(PASSWORD_FILE_ENV) or None
        if not user:
            if password or password_file:
                raise ValueError(f"{PASSWORD_ENV} or {PASSWORD_FILE_ENV} is set but "
                                 f"{USER_ENV} is not: set the etcd user too")
            return None
        if password is not None and password_file:
            password_file = None  # the value given outright wins over the file
        return cls(user, password, password_file)

    def secret(self) -> str:
        """The password (blocking: may read its file; trailing newlines dropped, as
        `kubectl create secret --from-file` keeps them)."""
        if self.password is not None:
            return self.password
        assert self.password_file is not None
        try:
            return Path(self.password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise StoreError(f"cannot read the password of etcd user {self.user!r} "
                             f"({PASSWORD_FILE_ENV}): {exc}") from exc


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[list[tuple[str, int]], bool]:
    """Split ``"h1:p1,http://h2:p2"`` (or a list of such) into ``(host, port)`` pairs.

    Returns the pairs and whether any endpoint asked for TLS (``https://``).
    """
    items = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    parts = [p.strip() for item in items for p in item.split(",") if p.strip()]
    if not parts:
        raise ValueError("no etcd endpoint given; expected 'host:port' (comma-separated)")
    pairs: list[tuple[str, int]] = []
    secure = False
    for part in parts:
        rest = part
        if "://" in rest:
            scheme, rest = rest.split("://", 1)
            if scheme not in ("http", "https"):
                raise ValueError(f"etcd endpoint {part!r}: scheme must be http or https")
            secure = secure or scheme == "https"
        rest = rest.rstrip("/")
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise ValueError(f"etcd endpoint {part!r} is not 'host:port'")
        pairs.append((host.strip("[]"), int(port_text)))
    return pairs, secure


def endpoint(host: str, port: int) -> str:
    """``"host:port"``, with an IPv6 host in brackets."""
    return f"{_format_host(host)}:{port}"


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def channel_target(
    addresses: Sequence[tuple[str, int]], *, tls: bool
) -> tuple[str, dict[str, Any]]:
    """The gRPC target one channel dials for ``addresses``, and the channel's options.

    One address is dialled as it is; several are resolved (without blocking the loop)
    into one multi-address target balanced by ``round_robin``. ``tls``: whether the
    channel will be secure (then a certificate's host name is checked against the first
    endpoint's name, since the multi-address target holds only addresses).
    """
    options: dict[str, Any] = {
        "grpc.keepalive_time_ms": _KEEPALIVE_TIME_MS,
        "grpc.keepalive_timeout_ms": _KEEPALIVE_TIMEOUT_MS,
        "grpc.keepalive_permit_without_calls": 0,
        "grpc.initial_reconnect_backoff_ms": _INITIAL_RECONNECT_BACKOFF_MS,
        "grpc.max_reconnect_backoff_ms": _MAX_RECONNECT_BACKOFF_MS,
    }
    if len(addresses) == 1:
        host, port = addresses[0]
        return endpoint(host, port), options
    where = ",".join(endpoint(h, p) for h, p in addresses)
    resolved = [await _resolve(host, port, where) for host, port in addresses]
    options["grpc.lb_policy_name"] = "round_robin"
    if tls and any(r[0] != h for r, (h, _) in zip(resolved, addresses, strict=True)):
        # The certificate names a host, the target only addresses: check the first name.
        options["grpc.ssl_target_name_override"] = addresses[0][0]
    return _multi_target(resolved), options


async def _resolve(host: str, port: int, where: str) -> tuple[str, int]:
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise StoreUnavailableError(
            f"etcd at {where} is unreachable: cannot resolve {host!r}: {exc}"
        ) from exc
    # One family per channel: prefer IPv4 when a name has both.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0]), port


def _multi_target(addresses: Sequence[tuple[str, int]]) -> str:
    """A gRPC ``ipv4:``/``ipv6:`` target listing every address, for round_robin."""
    families = {ipaddress.ip_address(h).version for h, _ in addresses}
    if families == {4}:
        return "ipv4:" + ",".join(f"{h}:{p}" for h, p in addresses)
    if families == {6}:
        return "ipv6:" + ",".join(f"[{h}]:{p}" for h, p in addresses)
    raise StoreError(
        "etcd endpoints mix IPv4 and IPv6 addresses, which one gRPC channel cannot "
        f"balance over: {addresses}"
    )
