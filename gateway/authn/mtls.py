"""mTLS callers as SPIFFE X509-SVIDs (X509-SVID.md sections 4-5; draft-ietf-wimse-mutual-tls 3).

The TLS listener has already verified the chain against the union of all configured bundles.
That is not enough: a certificate from trust domain A's CA claiming an identity in trust domain B
must be refused, so the chain's anchor has to be in the bundle of the trust domain named in the
URI SAN. The leaf rules (exactly one URI SAN, not a CA, digitalSignature) come from X509-SVID.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID

from gateway.authn.identifier import parse_workload_id
from gateway.clock import Clock
from gateway.errors import AuthnError, Reason
from gateway.model import AuthnMethod, Caller, Inbound


def load_bundle(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


class MtlsAuthenticator:
    """Turns a verified client certificate chain into a caller."""

    name = AuthnMethod.MTLS.value

    def __init__(self, bundles: dict[str, list[x509.Certificate]], clock: Clock) -> None:
        self.clock = clock
        self.bundles = bundles
        self._anchor_der = {
            td: {c.public_bytes(Encoding.DER) for c in certs}
            for td, certs in bundles.items()
        }

    def present(self, inbound: Inbound) -> bool:
        return bool(inbound.peer_chain)

    async def authenticate(self, inbound: Inbound) -> Caller:
        return self.verify_chain(inbound.peer_chain)

    def verify_chain(self, chain: tuple[bytes, ...]) -> Caller:
        try:
            leaf = x509.load_der_x509_certificate(chain[0])
        except (ValueError, IndexError):
            raise AuthnError(
                Reason.AUTHN_INVALID_CERTIFICATE, "unreadable client certificate"
            ) from None
        now = self.clock.now()
        if leaf.not_valid_after_utc.timestamp() < now:
            raise AuthnError(Reason.AUTHN_EXPIRED, "client certificate expired")
        if leaf.not_valid_before_utc.timestamp() > now:
            raise AuthnError(Reason.AUTHN_NOT_YET_VALID, "client certificate not yet valid")
        spiffe_id = self._single_uri_san(leaf)
        try:
            wid = parse_workload_id(spiffe_id, require_path=True)
        except ValueError as exc:
            raise AuthnError(Reason.AUTHN_INVALID_IDENTITY, f"URI SAN: {exc}") from None
        if wid.scheme != "spiffe":
            raise AuthnError(Reason.AUTHN_INVALID_IDENTITY, "URI SAN is not a SPIFFE ID")
        self._check_leaf_profile(leaf)
        anchors = self._anchor_der.get(wid.trust_domain)
        if anchors is None:
            raise AuthnError(Reason.AUTHN_UNTRUSTED, "no bundle for the certificate's trust domain")
        # SECURITY: cross-trust-domain impersonation; the anchor must belong to the SAN's domain.
        if not any(der in anchors for der in chain[1:]) and not self._issued_by_anchor(
            leaf, wid.trust_domain
        ):
            raise AuthnError(
                Reason.AUTHN_UNTRUSTED, "certificate does not chain to its trust domain's bundle"
            )
        return Caller(
            identity=wid.uri,
            trust_domain=wid.trust_domain,
            method=AuthnMethod.MTLS,
            # The TLS handshake proved possession of the certificate's key.
            proof_of_possession=True,
            expires_at=leaf.not_valid_after_utc.timestamp(),
            claims={"sub": wid.uri},
            key_thumbprint=None,
            credential_id="x5t#S256:" + hashlib.sha256(chain[0]).hexdigest()[:32],
        )

    @staticmethod
    def _single_uri_san(leaf: x509.Certificate) -> str:
        try:
            san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        except x509.ExtensionNotFound:
            raise AuthnError(Reason.AUTHN_INVALID_IDENTITY, "certificate has no URI SAN") from None
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) != 1:
            raise AuthnError(
                Reason.AUTHN_INVALID_IDENTITY, "an X509-SVID carries exactly one URI SAN"
            )
        return uris[0]

    @staticmethod
    def _check_leaf_profile(leaf: x509.Certificate) -> None:
        try:
            bc = leaf.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
            if bc.ca:
                raise AuthnError(Reason.AUTHN_INVALID_CERTIFICATE, "leaf certificate is a CA")
        except x509.ExtensionNotFound:
            pass
        try:
            ku = leaf.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
        except x509.ExtensionNotFound:
            raise AuthnError(
                Reason.AUTHN_INVALID_CERTIFICATE, "leaf lacks the key usage extension"
            ) from None
        if not ku.digital_signature or ku.key_cert_sign or ku.crl_sign:
            raise AuthnError(
                Reason.AUTHN_INVALID_CERTIFICATE,
                "leaf key usage must include digitalSignature and exclude keyCertSign/cRLSign",
            )

    def _issued_by_anchor(self, leaf: x509.Certificate, trust_domain: str) -> bool:
        for ca in self.bundles.get(trust_domain, ()):
            try:
                leaf.verify_directly_issued_by(ca)
                return True
            except Exception:  # noqa: S112 - any failure means: not this issuer
                continue
        return False


class XfccAuthenticator:
    """Identity from ``X-Forwarded-Client-Cert``, believed only from configured trusted proxies.

    A mesh sidecar (Envoy) terminates the caller's mTLS and passes what it verified in XFCC.
    We take the last element (the hop closest to us) and its ``URI`` (or ``Cert``, which is then
    checked like a direct client certificate). From any other peer the header is ignored here
    and stripped before forwarding.
    """

    name = "xfcc"

    def __init__(self, trusted: frozenset[str], mtls: MtlsAuthenticator) -> None:
        self.trusted = trusted
        self.mtls = mtls

    def present(self, inbound: Inbound) -> bool:
        return (inbound.peer_address in self.trusted
                and "X-Forwarded-Client-Cert" in inbound.headers)

    async def authenticate(self, inbound: Inbound) -> Caller:
        values = inbound.headers.getall("X-Forwarded-Client-Cert")
        element = _split_xfcc(values[-1])[-1] if values else {}
        cert = element.get("cert")
        if cert:
            try:
                pem = x509.load_pem_x509_certificate(unquote(cert).encode())
            except ValueError:
                raise AuthnError(Reason.AUTHN_INVALID_CERTIFICATE, "unreadable XFCC Cert") from None
            return self.mtls.verify_chain((pem.public_bytes(Encoding.DER),))
        uri = element.get("uri")
        if not uri:
            raise AuthnError(Reason.AUTHN_INVALID_IDENTITY, "XFCC names no URI")
        try:
            wid = parse_workload_id(uri, require_path=True)
        except ValueError as exc:
            raise AuthnError(Reason.AUTHN_INVALID_IDENTITY, f"XFCC URI: {exc}") from None
        if wid.trust_domain not in self.mtls.bundles:
            raise AuthnError(Reason.AUTHN_UNTRUSTED, "XFCC identity from an unknown trust domain")
        return Caller(identity=wid.uri, trust_domain=wid.trust_domain, method=AuthnMethod.MTLS,
                      proof_of_possession=True, expires_at=None, claims={"sub": wid.uri},
                      credential_id="xfcc:" + hashlib.sha256(uri.encode()).hexdigest()[:32])


def _split_xfcc(value: str) -> list[dict[str, str]]:
    """Envoy's format: elements split by ',', pairs by ';', values optionally quoted."""
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key, buf, quoted, in_value = "", "", False, False
    for ch in value + ",":
        if quoted:
            if ch == '"':
                quoted = False
            else:
                buf += ch
            continue
        if ch == '"' and in_value:
            quoted = True
        elif ch == "=" and not in_value:
            key, buf, in_value = buf.strip().lower(), "", True
        elif ch in ";,":
            if in_value:
                current[key] = buf.strip()
            key, buf, in_value = "", "", False
            if ch == ",":
                elements.append(current)
                current = {}
        else:
            buf += ch
    return elements or [{}]
