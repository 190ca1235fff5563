"""The local cluster's secrets, made on first use: a certificate authority, the brokers'
certificate, and a SCRAM password per principal.

Layout under ``<C2BUS_HOME>/secrets/`` (the directory mode 0700, every file 0600, each
created with that mode; nothing here is ever committed or logged)::

    ca.crt, ca.key              the local CA (EC P-256, ten years), trusted by every client
    broker.pem                  the brokers' key (PKCS#8) and certificate chain, for Kafka's
                                PEM keystore; CN=broker, for localhost and the loopback
                                addresses, server and client use (the controller quorum
                                authenticates nodes by it)
    <principal>.password        one SCRAM-SHA-512 password per principal

The certificates come from ``cryptography``; the SCRAM credentials are derived by Kafka's own
storage tool when a node is formatted (see :mod:`c2bus.tools.localkafka.cluster`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from c2bus.errors import LocalKafkaError

#: the principal the brokers authenticate to each other as (a super user)
BROKER = "broker"
#: the operators' principal (a super user): topics, ACLs, credentials
ADMIN = "admin"
CA_DAYS = 3650
CERT_DAYS = 825
#: a certificate this close to its end is issued again at the next start
RENEW_BEFORE = dt.timedelta(days=30)


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only, created with that mode (no
    moment at which another user could read it); an existing file is replaced the same way."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class LocalSecrets:
    """The secrets directory of one ``C2BUS_HOME``."""

    def __init__(self, directory: Path, hosts: Iterable[str] = ("localhost",)) -> None:
        self.dir = directory
        self.hosts = tuple(dict.fromkeys(("localhost", *hosts)))

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def broker_pem(self) -> Path:
        return self.dir / "broker.pem"

    def password_file(self, principal: str) -> Path:
        return self.dir / f"{principal}.password"

    def password(self, principal: str) -> str:
        try:
            return self.password_file(principal).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LocalKafkaError(
                f"no password for Kafka principal {principal!r} in {self.dir}: run "
                f"`c2bus kafka principal add` or `c2bus kafka reset`"
            ) from exc

    def ensure(self, principals: Iterable[str]) -> list[str]:
        """Create what is missing (the CA, the broker certificate, or renew it, and a password
        per principal); returns what was created, for progress output."""
        made: list[str] = []
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if not (self.ca_file.is_file() and (self.dir / "ca.key").is_file()):
            self._make_ca()
            made.append("a local certificate authority")
            self.broker_pem.unlink(missing_ok=True)
        if self._broker_cert_due():
            self._make_broker_cert()
            made.append("the brokers' certificate")
        for principal in principals:
            if not self.password_file(principal).is_file():
                write_secret(self.password_file(principal), secrets.token_urlsafe(32).encode())
                made.append(f"a password for {principal}")
        return made

    # -- the certificates ----------------------------------------------------------------------

    def _make_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "c2bus local CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_secret(self.dir / "ca.key", _pkcs8(key))
        write_secret(self.ca_file, cert.public_bytes(serialization.Encoding.PEM))

    def _load_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = serialization.load_pem_private_key((self.dir / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise LocalKafkaError(f"{self.dir / 'ca.key'} is not the local CA's key")
        return key, x509.load_pem_x509_certificate(self.ca_file.read_bytes())

    def _broker_cert_due(self) -> bool:
        if not self.broker_pem.is_file():
            return True
        try:
            cert = x509.load_pem_x509_certificate(self.broker_pem.read_bytes())
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            return True
        covered = set(names.get_values_for_type(x509.DNSName)) | {
            str(ip) for ip in names.get_values_for_type(x509.IPAddress)
        }
        return cert.not_valid_after_utc - RENEW_BEFORE < _now() or not set(self.hosts) <= covered

    def _make_broker_cert(self) -> None:
        alt: list[x509.GeneralName] = []
        for host in (*self.hosts, "127.0.0.1", "::1"):
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        key, chain = self._issue(BROKER, usage, alt)
        write_secret(self.broker_pem, _pkcs8(key) + chain)

    def client_cert(self, principal: str) -> tuple[Path, Path]:
        """A client certificate for ``principal`` (CN=<principal>, client use only), made
        once: its certificate chain and key files."""
        cert, key_file = self.dir / f"{principal}.crt", self.dir / f"{principal}.key"
        if not (cert.is_file() and key_file.is_file()):
            key, chain = self._issue(principal, [ExtendedKeyUsageOID.CLIENT_AUTH], [])
            write_secret(key_file, _pkcs8(key))
            write_secret(cert, chain)
        return cert, key_file

    def _issue(
        self, name: str, usage: list[x509.ObjectIdentifier], alt: list[x509.GeneralName]
    ) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        """A new key and a certificate for it signed by the local CA (with the CA's after it)."""
        ca_key, ca_cert = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
            serialization.Encoding.PEM
        )
        return key, chain


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
