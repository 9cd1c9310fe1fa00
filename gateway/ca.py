"""A small X.509 CA that issues SPIFFE X509-SVIDs (X509-SVID.md section 4) and server certs.

Used by the demo to make a throwaway trust domain, and by tests to make valid and deliberately
broken certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.keys import PrivateKey, write_private_key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, cert_path: Path, key_path: Path, chain: list[x509.Certificate] = ()) -> None:
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        pem = self.cert_pem() + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in chain)
        cert_path.write_bytes(pem)
        write_private_key(key_path, self.key)


class CertificateAuthority:
    """A root (or intermediate) CA for one trust domain."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, trust_domain: str, days: int = 30) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{trust_domain} root CA"))
            .issuer_name(_name(f"{trust_domain} root CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def intermediate(self, trust_domain: str, days: int = 7) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            self._builder(key, _name(f"{trust_domain} intermediate CA"), now,
                          now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return CertificateAuthority(cert, key)

    def _builder(self, key: PrivateKey, subject: x509.Name, not_before: dt.datetime,
                 not_after: dt.datetime) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )

    def issue_svid(
        self,
        spiffe_ids: list[str] | str,
        *,
        lifetime: dt.timedelta = dt.timedelta(hours=1),
        not_before: dt.datetime | None = None,
        ca: bool = False,
        digital_signature: bool = True,
        key_cert_sign: bool = False,
        dns_names: list[str] = (),
    ) -> Issued:
        """An X509-SVID; the keyword arguments exist to make broken ones for tests."""
        key = ec.generate_private_key(ec.SECP256R1())
        ids = [spiffe_ids] if isinstance(spiffe_ids, str) else spiffe_ids
        nb = not_before or (_now() - dt.timedelta(minutes=1))
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in ids]
        sans += [x509.DNSName(d) for d in dns_names]
        b = self._builder(key, _name(ids[0] if ids else "no id"), nb, nb + lifetime)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = (
            b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=digital_signature, content_commitment=False,
                # an empty key usage is not a valid certificate; keep one bit set
                key_encipherment=not digital_signature, data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign, crl_sign=False, encipher_only=False,
                decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert, key)

    def issue_server(self, hosts: list[str], days: int = 30) -> Issued:
        """A TLS server certificate for DNS names and IP addresses."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        cert = (
            self._builder(key, _name(hosts[0]), now - dt.timedelta(minutes=1),
                          now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert, key)
