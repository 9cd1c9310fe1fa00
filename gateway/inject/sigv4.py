"""AWS Signature Version 4 with the credentials from ``exchange: aws``, signed by botocore.

Signed: ``host``, ``content-type``, ``content-md5``, ``content-encoding`` and every ``x-amz-*``
header, which is what AWS requires; the gateway's forwarding headers stay unsigned, so a proxy
on the way may add to them. ``payload: signed`` hashes the body (read whole, bounded by
``limits.max_buffered_body_bytes``); ``payload: unsigned`` sends ``UNSIGNED-PAYLOAD`` and
streams the body untouched (S3 only).
"""

from __future__ import annotations

import hashlib

from gateway.errors import ExchangeError, Reason
from gateway.inject.base import Outgoing
from gateway.model import Credential

SIGNED = ("content-type", "content-md5", "content-encoding")
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


class SigV4Injector:
    kind = "aws_sigv4"

    def __init__(self, service: str, region: str, signed_payload: bool = True) -> None:
        self.service = service
        self.region = region
        self.needs_body = signed_payload
        from botocore.auth import S3SigV4Auth, SigV4Auth
        from botocore.config import Config

        # S3 signs the raw path and may leave the payload unsigned; others normalise the path.
        self._auth = S3SigV4Auth if service == "s3" else SigV4Auth
        self._s3_config = Config(s3={"payload_signing_enabled": signed_payload})

    def inject(self, out: Outgoing, credential: Credential) -> None:
        creds = credential.proof_key
        if creds is None or not hasattr(creds, "secret_key"):
            raise ExchangeError(Reason.EXCHANGE_FAILED, "the aws_sigv4 injector needs AWS "
                                "credentials (exchange type aws)")
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        headers = out.headers
        for name in ("X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-SHA256"):
            headers.popall(name, None)
        payload = (hashlib.sha256(out.body or b"").hexdigest() if self.needs_body
                   else UNSIGNED_PAYLOAD)
        headers["X-Amz-Content-SHA256"] = payload
        to_sign = {k: v for k, v in headers.items()
                   if k.lower() in SIGNED or k.lower().startswith("x-amz-")}
        request = AWSRequest(method=out.dest.method, url=str(out.dest.url), headers=to_sign,
                             data=out.body or b"")
        request.context["payload_signing_enabled"] = self.needs_body
        request.context["client_config"] = self._s3_config
        self._auth(Credentials(creds.access_key, creds.secret_key, creds.token),
                   self.service, self.region).add_auth(request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token",
                     "X-Amz-Content-SHA256"):
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        out.notes["aws_payload"] = "signed" if self.needs_body else "unsigned"
