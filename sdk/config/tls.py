"""HTTPS on the proxies: Ray's `http_options.ssl_*` names, read and checked in one place.

Why check the files before a server sees them: hypercorn and uvicorn load the certificate
when they bind, and a wrong path or a key that does not match the certificate kills the
proxy with a traceback from `ssl`. Loading them here first, into a context of our own,
turns that into an error that names the field and the file, at `weir start` (before any
process starts) and at deploy (before the goal changes, so the running config stays).

The files are read where the check runs: at deploy that is the leader's machine, which is
every proxy's machine in a one-machine cluster; on several machines each proxy checks
again when it starts.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The http_options fields (Ray's names) and the `weir start` / proxy flags that set them.
TLS_FIELDS = ("ssl_keyfile", "ssl_certfile", "ssl_keyfile_password", "ssl_ca_certs")


class TlsError(ValueError):
    """A TLS file cannot be used; the message names the field and the file."""


@dataclass(frozen=True)
class TlsFiles:
    """Where a proxy's certificate, key (and client CA bundle) are; all empty: plain HTTP."""

    certfile: str = ""
    keyfile: str = ""
    keyfile_password: str = ""
    ca_certs: str = ""

    @property
    def enabled(self) -> bool:
        """Whether these options ask for HTTPS."""
        return bool(self.certfile or self.keyfile)


def tls_files(http_options: Mapping[str, Any]) -> TlsFiles:
    """The TLS files an http_options mapping names (None and absent read as empty). Pure."""
    return TlsFiles(certfile=str(http_options.get("ssl_certfile") or ""),
                    keyfile=str(http_options.get("ssl_keyfile") or ""),
                    keyfile_password=str(http_options.get("ssl_keyfile_password") or ""),
                    ca_certs=str(http_options.get("ssl_ca_certs") or ""))


#: The key's password reaches the proxy in its environment, not on its command line
#: (which every user of the machine can read).
PASSWORD_ENV = "WEIR_SSL_KEYFILE_PASSWORD"


def proxy_flags(files: TlsFiles) -> list[str]:
    """The `python -m weir.proxy` flags serving `files` (none for plain HTTP; the password
    goes in PASSWORD_ENV)."""
    flags = []
    for flag, value in (("--ssl-certfile", files.certfile), ("--ssl-keyfile", files.keyfile),
                        ("--ssl-ca-certs", files.ca_certs)):
        if value:
            flags += [flag, str(Path(value).resolve())]
    return flags


def shape_problem(files: TlsFiles) -> str:
    """What is wrong with the fields themselves, before any file is read ("" if nothing).
    Pure: the config schema calls it."""
    if files.certfile and not files.keyfile:
        return "ssl_certfile is set but ssl_keyfile is not: give both (the key of the certificate)"
    if files.keyfile and not files.certfile:
        return "ssl_keyfile is set but ssl_certfile is not: give both"
    if (files.keyfile_password or files.ca_certs) and not files.enabled:
        return ("ssl_keyfile_password and ssl_ca_certs need ssl_certfile and ssl_keyfile "
                "(HTTPS is on only with a certificate and its key)")
    return ""


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """An SSL context serving `files`; TlsError naming the field and file if one cannot be
    read, is not PEM, or the key does not match the certificate. Reads files: call it off
    the event loop."""
    problem = shape_problem(files)
    if problem:
        raise TlsError(problem)
    for name, path in (("ssl_certfile", files.certfile), ("ssl_keyfile", files.keyfile),
                       ("ssl_ca_certs", files.ca_certs)):
        if path and not Path(path).is_file():
            raise TlsError(f"http_options.{name}: no file at {path!r} (give the path of a PEM "
                           "file readable where the proxy runs)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(files.certfile, files.keyfile,
                                password=files.keyfile_password or None)
    except ssl.SSLError as exc:
        raise TlsError(
            f"http_options.ssl_certfile {files.certfile!r} and ssl_keyfile {files.keyfile!r} "
            f"cannot be used together: {_reason(exc)} (is the key the certificate's, both "
            "PEM, and ssl_keyfile_password right if the key is encrypted?)") from None
    except OSError as exc:
        raise TlsError(f"http_options.ssl_certfile/ssl_keyfile: cannot read them: {exc}") from None
    if files.ca_certs:
        try:
            context.load_verify_locations(cafile=files.ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(f"http_options.ssl_ca_certs {files.ca_certs!r} is not a PEM CA "
                           f"bundle: {_reason(exc)}") from None
        # As in Ray (uvicorn's ssl_ca_certs): the CAs are loaded, and client certificates
        # are not required.
    return context


def tls_problem(http_options: Mapping[str, Any]) -> str:
    """What stops these http_options from serving HTTPS ("" if nothing, or no HTTPS asked).
    Reads files: call it off the event loop."""
    files = tls_files(http_options)
    if not files.enabled and not shape_problem(files):
        return ""
    try:
        server_context(files)
    except TlsError as exc:
        return str(exc)
    return ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc)
