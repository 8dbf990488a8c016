"""`imagefleet run`: the operator, kopf in-process, against the current kubeconfig or in-cluster."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
from pydantic import ValidationError

from . import heap
from .catalog import CatalogError
from .config import OperatorSettings


@click.command("run")
@click.option(
    "--namespace", "-n", "namespaces", multiple=True,
    help="Watch this namespace (repeatable). Default: IMAGEFLEET_NAMESPACES, else all namespaces.",
)
@click.option("--all-namespaces", "-A", is_flag=True, help="Watch every namespace.")
@click.option(
    "--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster credentials).",
)
@click.option("--liveness", metavar="URL", help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.")
@click.option("--verbose", "-v", is_flag=True, help="Log every handler call (kopf's INFO and DEBUG logs).")
def run(
    namespaces: tuple[str, ...], all_namespaces: bool, kubeconfig: Path | None, liveness: str | None, verbose: bool
) -> None:
    """Run the operator: reconcile ImageModelDeployments into runtime Deployments and Services."""
    if all_namespaces and namespaces:
        raise click.UsageError("give --namespace or --all-namespaces, not both")
    try:
        settings = OperatorSettings()
        gpu_classes = settings.gpu_classes
    except (ValidationError, CatalogError) as error:
        raise click.ClickException(str(error)) from error
    if kubeconfig:
        os.environ["KUBECONFIG"] = str(kubeconfig)
    chosen = [] if all_namespaces else list(namespaces) or settings.namespace_list

    import kopf  # imported here: `imagefleet crd` and the other commands never pay for it

    from . import handlers  # registers the handlers
    from .handlers.discovery import Insights

    if settings.peering:
        handlers.peering.register(cluster_wide=not chosen)

    # kopf logs every handler call at INFO: hundreds of lines a second under load. Keep its
    # warnings (and everything with --verbose); the operator's own log stays at INFO.
    kopf.configure(verbose=verbose, quiet=not verbose)
    logging.getLogger("imagefleet").setLevel(logging.DEBUG if verbose else logging.INFO)
    trimming = heap.start_trimming()
    click.echo(
        f"imagefleet operator: watching {', '.join(chosen) if chosen else 'all namespaces'}; "
        f"GPU classes: {', '.join(gpu_classes)}; allocator: {os.environ.get('PYTHONMALLOC') or 'pymalloc'}, "
        f"freed memory returned every {heap.TRIM_INTERVAL_SECONDS:g} s: {'yes' if trimming else 'no (no glibc)'}",
        err=True,
    )
    insights = Insights()  # what kopf watches; handlers.discovery completes it when discovery lags
    kopf.run(clusterwide=not chosen, namespaces=chosen, liveness_endpoint=liveness, insights=insights,
             memo=kopf.Memo(kopf_insights=insights))
