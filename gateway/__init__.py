"""wimse-gateway: a policy-driven credential-exchange gateway for workload identity."""

__version__ = "0.1.0"
