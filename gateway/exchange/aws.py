"""AWS: the caller's JWT (or one the gateway mints for it) for temporary AWS credentials.

``AssumeRoleWithWebIdentity`` at AWS STS, called with ``botocore`` (in a worker thread: the
call is blocking, and only cache misses make it). This is a *translation*, and a lossy one: AWS
keeps only the token's ``aud``, ``sub`` and ``amr`` (as condition keys); every other claim is
recorded as dropped. ``DurationSeconds`` is bounded by the caller's remaining lifetime, and AWS
grants no less than 900 s, so a caller whose credential expires sooner is refused with
``policy.lifetime_extension`` unless its rule says ``allow_lifetime_extension``.

The credentials are bearer-equivalent (whoever holds the three values can sign), so the
credential is not counted as proof-of-possession; SigV4 protects each request, not the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from gateway.clock import Clock
from gateway.config.policy import AwsExchangeConfig
from gateway.errors import ExchangeError, PolicyError, Reason
from gateway.exchange.base import dropped_claims
from gateway.model import Caller, Credential, Destination

AWS_TOKEN_TYPE = "urn:wimse-gateway:token-type:aws-sts-credentials"  # local name
AWS_MIN_DURATION = 900
SURVIVING_CLAIMS = ("aud", "sub", "amr")


def session_name(identity: str) -> str:
    """A RoleSessionName (``[\\w+=,.@-]{2,64}``) derived from the caller identity.

    Long names are cut and suffixed with a hash of the whole identity, so two callers never
    share a session name (it shows in CloudTrail and in ``aws:userid``).
    """
    scheme_less = identity.split("://", 1)[-1]
    name = re.sub(r"[^\w+=,.@-]", "-", scheme_less, flags=re.ASCII).strip("-") or "caller"
    if len(name) > 64:
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        name = name[:51] + "-" + digest
    return name.ljust(2, "-")


class AwsCredentials:
    """What SigV4 needs; ``repr`` shows the key id only."""

    __slots__ = ("access_key", "secret_key", "token")

    def __init__(self, access_key: str, secret_key: str, token: str) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token

    def __repr__(self) -> str:
        return f"AwsCredentials({self.access_key})"


class AwsExchanger:
    kind = "aws"

    def __init__(self, cfg: AwsExchangeConfig, clock: Clock, minter: Any | None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.minter = minter
        self._client: Any = None

    def cache_key(self, caller: Caller, dest: Destination) -> tuple[str, ...]:
        subject = caller.credential_id or "" if self.cfg.web_identity == "caller_token" \
            else "minted"
        return (self.cfg.role_arn, subject)

    def client(self) -> Any:
        if self._client is None:
            import botocore.session
            from botocore import UNSIGNED
            from botocore.config import Config

            session = botocore.session.Session()
            self._client = session.create_client(
                "sts", region_name=self.cfg.region, endpoint_url=self.cfg.endpoint,
                aws_access_key_id="", aws_secret_access_key="",
                config=Config(signature_version=UNSIGNED, connect_timeout=self.cfg.timeout,
                              read_timeout=self.cfg.timeout, retries={"max_attempts": 1}))
        return self._client

    def web_identity_token(self, caller: Caller, lifetime: float) -> str:
        if self.cfg.web_identity == "caller_token":
            if not caller.raw_token:
                raise ExchangeError(Reason.EXCHANGE_NO_SUBJECT,
                                    "the caller sent no JWT to present to AWS")
            return caller.raw_token
        if self.minter is None:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "no issuer to mint a web identity token")
        return self.minter.subject_token(caller, self.cfg.audience, min(300.0, lifetime))

    async def exchange(self, caller: Caller, dest: Destination, max_lifetime: float
                       ) -> Credential:
        duration = int(min(float(self.cfg.lifetime), max_lifetime))
        if duration < AWS_MIN_DURATION:
            # max_lifetime is only this short when the rule did not allow an extension.
            raise PolicyError(Reason.POLICY_LIFETIME_EXTENSION,
                              f"AWS grants at least {AWS_MIN_DURATION}s; the caller's "
                              f"credential expires in {max(0, duration)}s")
        token = self.web_identity_token(caller, max_lifetime)
        assert caller.identity is not None
        params = {"RoleArn": self.cfg.role_arn, "RoleSessionName": session_name(caller.identity),
                  "WebIdentityToken": token, "DurationSeconds": duration}
        answer = await asyncio.to_thread(self._call, params)
        creds = answer.get("Credentials") or {}
        try:
            access_key = str(creds["AccessKeyId"])
            secret = str(creds["SecretAccessKey"])
            session_token = str(creds["SessionToken"])
            expires_at = creds["Expiration"].timestamp()
        except (KeyError, AttributeError, TypeError):
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE,
                                "AWS STS answered without credentials") from None
        carried = tuple(c for c in SURVIVING_CLAIMS if c in caller.claims)
        user = (answer.get("AssumedRoleUser") or {}).get("Arn", self.cfg.role_arn)
        return Credential(
            token=session_token, token_type="N_A", issued_token_type=AWS_TOKEN_TYPE,
            expires_at=expires_at, proof_of_possession=False,
            token_id="aws:" + hashlib.sha256(access_key.encode()).hexdigest()[:16],
            issuer=str(user), claims_carried=carried,
            claims_dropped=dropped_claims(caller, SURVIVING_CLAIMS),
            proof_key=AwsCredentials(access_key, secret, session_token),
        )

    def _call(self, params: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client().assume_role_with_web_identity(**params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("AccessDenied", "InvalidIdentityToken", "ExpiredTokenException",
                        "IDPRejectedClaim") or status in (400, 403):
                raise ExchangeError(Reason.EXCHANGE_STS_REFUSED,
                                    f"AWS STS refused: {code or status}") from None
            raise ExchangeError(Reason.EXCHANGE_STS_UNAVAILABLE,
                                f"AWS STS failed: {code or status}") from None
        except BotoCoreError as exc:
            raise ExchangeError(Reason.EXCHANGE_STS_UNAVAILABLE,
                                f"AWS STS unreachable: {type(exc).__name__}") from None
        except Exception as exc:  # botocore's parser errors are not BotoCoreErrors
            raise ExchangeError(Reason.EXCHANGE_BAD_RESPONSE,
                                f"AWS STS answered nonsense: {type(exc).__name__}") from None
