"""A local certificate authority and server certificate for the broker's TLS listener.

Production uses the operator's own certificate (compose mounts it). For `fleet demo` and
the tests this makes one CA (kept in the data dir, key 0600) and a server certificate
signed by it for ``localhost``/``127.0.0.1`` (plus any extra names), so that simulated
vans connect over TLS *with* verification, exactly as real trackers should.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LocalCa", "ServerCertificate", "ensure_local_tls"]

VALID_DAYS = 825
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class ServerCertificate:
    ca_file: Path  # what devices verify the broker against
    certfile: Path
    keyfile: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


class LocalCa:
    """A CA of our own: ``ca.crt`` (give it to devices) and ``ca.key`` (0600)."""

    def __init__(self, directory: Path, name: str = "Makassar fleet local CA") -> None:
        self.cert_path = directory / "ca.crt"
        self.key_path = directory / "ca.key"
        if not (self.cert_path.exists() and self.key_path.exists()):
            self._create(name)
        self.key = _load_key(self.key_path)
        self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    def _create(self, name: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.key_path, key)
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue_server(self, directory: Path, names: Sequence[str] = ()) -> ServerCertificate:
        """A server certificate for localhost, 127.0.0.1 and ``names`` (re-issued if needed)."""
        certfile, keyfile = directory / "server.crt", directory / "server.key"
        wanted = sorted({"localhost", "127.0.0.1", *names})
        if certfile.exists() and keyfile.exists() and _covers(certfile, wanted, self.cert):
            return ServerCertificate(self.cert_path, certfile, keyfile)
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for n in wanted:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, wanted[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        _write_key(keyfile, key)
        certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return ServerCertificate(self.cert_path, certfile, keyfile)


def _covers(certfile: Path, names: list[str], ca: x509.Certificate) -> bool:
    cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    if cert.issuer != ca.subject or cert.not_valid_after_utc < dt.datetime.now(dt.UTC):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    have |= set(san.get_values_for_type(x509.DNSName))
    return set(names) <= have


def ensure_local_tls(directory: Path, names: Sequence[str] = ()) -> ServerCertificate:
    """The local CA and a server certificate under ``directory`` (made once, then reused)."""
    return LocalCa(directory).issue_server(directory, names)
