"""etcd that checks who calls, for tests: a throwaway certificate authority (a CA, and
server and client certificates it signed, as PEM files: what `openssl` or cert-manager
would make), and etcd's own users turned on as an operator does with etcdctl."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from weir.etcd.server import EtcdServer, find_etcd_binary

#: The user `enable_auth` makes (etcd's superuser: authentication needs it).
ROOT_USER = "root"


@dataclass(frozen=True)
class Certificates:
    """PEM file paths: the CA, the server's pair (for 127.0.0.1 and localhost), a client's
    pair, and a member's pair good for both (`tls.crt`/`tls.key`, as docs/kubernetes.md
    has users make for the chart's etcd)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    member_cert: Path
    member_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_certificates(folder: Path) -> Certificates:
    """A CA and two certificates it signed, written under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("weir-test-ca"))
               .issuer_name(_name("weir-test-ca")).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    (folder / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(common_name: str, usages: list[x509.ObjectIdentifier], stem: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (x509.CertificateBuilder().subject_name(_name(common_name))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, folder / f"{stem}.key")

    issue("etcd-server", [ExtendedKeyUsageOID.SERVER_AUTH], "server")
    issue("weir-client", [ExtendedKeyUsageOID.CLIENT_AUTH], "client")
    issue("weir-etcd", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
          "tls")
    return Certificates(folder / "ca.crt", folder / "server.crt", folder / "server.key",
                        folder / "client.crt", folder / "client.key",
                        folder / "tls.crt", folder / "tls.key")


def enable_auth(server: EtcdServer, password: str) -> None:
    """`etcdctl user add root` and `etcdctl auth enable` against `server`."""
    etcdctl = [str(Path(find_etcd_binary()).with_name("etcdctl")),
               "--endpoints", server.endpoint]
    for args in (["user", "add", ROOT_USER, f"--new-user-password={password}"],
                 ["auth", "enable"]):
        subprocess.run([*etcdctl, *args], check=True, capture_output=True, timeout=20)
