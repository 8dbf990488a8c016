"""The `imagefleet` console script.

Each subcommand lives in the module its name points to and is imported only
when it runs, so `imagefleet crd` never pays for kopf and nothing here imports
torch.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command.
COMMANDS: dict[str, str] = {
    "dev": "imagefleet.dev.cli:dev",
    "run": "imagefleet.runner:run",
    "crd": "imagefleet.crd.generate:crd",
    "crd-reference": "imagefleet.crd.reference:crd_reference",
    "demo": "imagefleet.demo:demo",
    "bench": "imagefleet.bench:bench",
    "simulate": "imagefleet.autoscaling.simulate:simulate",
    "simulate-pool": "imagefleet.pool.simulate:simulate_pool",
    "gateway": "imagefleet.gateway.command:gateway",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
def main() -> None:
    """Run image-generation model fleets on Kubernetes."""
