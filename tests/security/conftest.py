"""The security suite reuses the gateway tests' runtime processes (tiny model, CPU, loopback)."""

from tests.gateway.conftest import bulk_pod, premium_pod  # noqa: F401
