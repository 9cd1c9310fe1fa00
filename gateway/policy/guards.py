"""Guard rails from the WIMSE credential-exchange draft (section 6), enforced for every exchanger.

An exchanged credential never outlives, nor out-trusts, the credential it was exchanged for,
unless the matching rule turns the rail off by name. The engine checks what came back, not what
an exchanger promised, so an STS that ignores the requested lifetime is caught here.
"""

from __future__ import annotations

from gateway.errors import PolicyError, Reason
from gateway.model import Caller, Credential, Decision

# Tolerance for clocks that round to whole seconds (JWT `exp` is an integer).
LIFETIME_SLACK_SECONDS = 1.0


def max_lifetime_for(caller: Caller, decision: Decision, now: float, wanted: float) -> float:
    """The longest lifetime (seconds) an exchanger may ask for on this caller's behalf."""
    if decision.allow_lifetime_extension or caller.expires_at is None:
        return wanted
    return max(0.0, min(wanted, caller.expires_at - now))


def check_credential(caller: Caller, decision: Decision, credential: Credential) -> None:
    """Raise PolicyError if ``credential`` would outlive or out-trust ``caller``'s credential."""
    if (
        not decision.allow_lifetime_extension
        and caller.expires_at is not None
        and credential.expires_at > caller.expires_at + LIFETIME_SLACK_SECONDS
    ):
        raise PolicyError(
            Reason.POLICY_LIFETIME_EXTENSION,
            f"the credential for profile {decision.profile} would expire "
            f"{credential.expires_at - caller.expires_at:.0f}s after the caller's",
        )
    if (
        not decision.allow_assurance_upgrade
        and credential.proof_of_possession
        and not caller.proof_of_possession
    ):
        raise PolicyError(
            Reason.POLICY_ASSURANCE_UPGRADE,
            f"profile {decision.profile} yields a key-bound credential for a bearer caller",
        )
