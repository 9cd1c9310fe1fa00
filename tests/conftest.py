"""Shared fixtures: a test trust domain with SPIFFE leaves, upstreams and gateways on loopback."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.ca import CertificateAuthority, Issued
from gateway.keys import load_or_create_key
from tests.helpers.servers import Upstream, start_upstream

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TD = "example.org"


@dataclass
class Pki:
    """Files for one test: a CA, a server cert for 127.0.0.1, SVIDs, an issuer key."""

    dir: Path
    ca: CertificateAuthority

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    def svid(self, name: str, spiffe_id: str | list[str], **kw: object) -> tuple[Path, Path]:
        issued: Issued = self.ca.issue_svid(spiffe_id, **kw)  # type: ignore[arg-type]
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        issued.write(cert, key)
        return cert, key

    def client_context(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if cert and key:
            ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def server_context(self, require_client: bool = False) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.dir / "server.pem"), str(self.dir / "server.key"))
        if require_client:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(self.ca_file))
        return ctx


@pytest.fixture(scope="session")
def session_ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD)


@pytest.fixture
def pki(tmp_path: Path, session_ca: CertificateAuthority) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    (d / "ca.pem").write_bytes(session_ca.cert_pem())
    session_ca.issue_server(["127.0.0.1", "localhost"]).write(d / "server.pem", d / "server.key")
    load_or_create_key(d / "issuer.key")
    return Pki(d, session_ca)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = await start_upstream()
    yield up
    await up.close()
