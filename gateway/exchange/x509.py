"""Short-lived X.509 client certificates for the caller's identity, for mTLS to the upstream.

The gateway's intermediate CA issues a certificate whose only URI SAN is the caller's workload
identifier (an X509-SVID when it is a SPIFFE ID: CA:false, digitalSignature, clientAuth), for a
fresh P-256 key that never leaves the process. It never outlives the caller's credential (the
guard rails pass ``max_lifetime``), and the credential cache keeps one per caller until shortly
before it expires. Which of the caller's claims survive is recorded: only the identifier does.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.clock import Clock
from gateway.config.policy import X509ExchangeConfig
from gateway.errors import ExchangeError, PolicyError, Reason
from gateway.exchange.base import dropped_claims
from gateway.keys import PrivateKey, SigningKey
from gateway.model import Caller, Credential, Destination

X509_TOKEN_TYPE = "urn:wimse-gateway:token-type:x509-svid"  # local name: none is registered
BACKDATE = 30.0  # seconds of clock skew tolerated by upstreams


class X509Exchanger:
    kind = "x509"

    def __init__(self, cfg: X509ExchangeConfig, ca_chain: list[x509.Certificate],
                 ca_key: PrivateKey, clock: Clock) -> None:
        self.cfg = cfg
        self.ca_cert = ca_chain[0]
        self.chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ca_chain)
        self.ca_key = ca_key
        self.clock = clock
        self.issuer = self.ca_cert.subject.rfc4514_string()

    def cache_key(self, caller: Caller, dest: Destination) -> tuple[str, ...]:
        return ()

    async def exchange(self, caller: Caller, dest: Destination, max_lifetime: float
                       ) -> Credential:
        if not caller.identity or ":" not in caller.identity:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "the caller has no URI identifier to "
                                "put in a certificate")
        lifetime = min(float(self.cfg.lifetime), max_lifetime)
        if lifetime < self.cfg.min_lifetime:
            raise PolicyError(Reason.POLICY_LIFETIME_EXTENSION,
                              f"the caller's credential expires in {lifetime:.0f}s, under the "
                              f"certificate's minimum of {self.cfg.min_lifetime}s")
        now = self.clock.now()
        not_after = now + lifetime
        ca_not_after = self.ca_cert.not_valid_after_utc.timestamp()
        if ca_not_after < not_after:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "the issuing CA expires before the "
                                "certificate would")
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        try:
            cert = self._build(caller.identity, key, serial, now, not_after)
        except ValueError:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "the caller's identifier cannot go into "
                                "a certificate") from None
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.chain_pem
        return Credential(
            token=chain.decode("ascii"), token_type="N_A", issued_token_type=X509_TOKEN_TYPE,
            expires_at=not_after, proof_of_possession=True,
            token_id=f"x509:{serial:x}", issuer=self.issuer,
            claims_carried=("sub",),  # the identifier, as the certificate's URI SAN
            claims_dropped=dropped_claims(caller, ("sub",)),
            proof_key=SigningKey.from_private_key(key),
        )

    def _build(self, identity: str, key: ec.EllipticCurvePrivateKey, serial: int, now: float,
               not_after: float) -> x509.Certificate:
        if not identity.isascii() or not identity.isprintable():
            raise ValueError("identifier is not printable ASCII")
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(dt.datetime.fromtimestamp(now - BACKDATE, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(not_after, dt.UTC))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(identity)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.ca_key.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(self.ca_key, hashes.SHA256())
        )
