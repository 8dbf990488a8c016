"""`imagefleet dev up|down|build|images`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from . import build, components
from .errors import DevError
from .paths import default_state_dir

_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_state_dir,
    show_default="~/.cache/imagefleet/dev-cluster",
    help="Where the cluster keeps its data, certificates, logs and PIDs.",
)


def _progress(message: str) -> None:
    click.echo(f"imagefleet dev: {message}", err=True)


def _fail(error: DevError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(1)


@click.group()
def dev() -> None:
    """A local control plane with simulated GPU nodes."""


@dev.command()
@_state_dir_option
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the kubeconfig.")
@click.option("--fleet", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A fleet file (like imagefleet/dev/fleet.yaml) describing the simulated nodes.")
@click.option("--apiserver-port", type=int, default=0, show_default=True,
              help="The API server's port on 127.0.0.1 (0: a free one).")
@click.option("--node-agent/--no-node-agent", default=True, show_default=True,
              help="Run each runtime pod as a real (emulated-engine) runtime process at its loopback pod IP.")
@click.option("--emulation-speedup", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Divide every emulated model-load and generation time by this (time-compressed runs).")
@click.option("--with-keda", is_flag=True,
              help="Also run KEDA's operator and metrics API server (built from its Go module on first use).")
def up(
    state_dir: Path,
    kubeconfig: Path | None,
    fleet: Path | None,
    apiserver_port: int,
    node_agent: bool,
    emulation_speedup: float,
    with_keda: bool,
) -> None:
    """Start etcd, the API server, controller manager, scheduler, KWOK nodes and the node agent (and KEDA); print the kubeconfig path."""
    from .cluster import ControlPlane
    from .fleet import load_fleet

    started = time.monotonic()
    try:
        plane = ControlPlane(
            state_dir, kubeconfig=kubeconfig, fleet=load_fleet(fleet), apiserver_port=apiserver_port,
            node_agent=node_agent, emulation_speedup=emulation_speedup, with_keda=with_keda,
        )
        path = plane.up(_progress)
    except DevError as error:
        _fail(error)
    _progress(f"ready in {time.monotonic() - started:.1f}s; logs in {plane.logs_dir}; stop with `imagefleet dev down`")
    click.echo(str(path))


@dev.command()
@_state_dir_option
def down(state_dir: Path) -> None:
    """Stop every process `up` started."""
    from .cluster import ControlPlane

    ControlPlane(state_dir).down()
    _progress("stopped")


@dev.command()
@_state_dir_option
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--emulation-speedup", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
def agent(state_dir: Path, kubeconfig: Path, emulation_speedup: float) -> None:
    """The node agent (`dev up` starts it): runs the runtime pods of the simulated nodes."""
    from ..nodeagent.agent import serve

    serve(state_dir, kubeconfig, emulation_speedup)


@dev.command("build")
def build_command() -> None:
    """Build (once, into the cache) every binary the dev tooling and tests use."""
    try:
        for name, path in build.ensure_built(components.ALL, _progress).items():
            click.echo(f"{name}\t{path}")
    except DevError as error:
        _fail(error)


@dev.command("images")
@click.argument("names", nargs=-1, type=click.Choice(["operator", "runtime"]))
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."),
              show_default="the current directory", help="The imagefleet checkout to build from.")
def images_command(names: tuple[str, ...], source: Path) -> None:
    """Build the container images (default: both) with buildah unless their inputs are built already."""
    from . import images

    specs = {"operator": images.OPERATOR, "runtime": images.RUNTIME}
    root = source.resolve()
    try:
        if not (root / images.OPERATOR.dockerfile).is_file():
            raise DevError(f"{root} is not an imagefleet checkout (no {images.OPERATOR.dockerfile})")
        base = images.base_image(_progress)
        for name in names or tuple(specs):
            image = images.build(specs[name], root, base.reference, _progress)
            built = "found in storage" if image.build_seconds is None else f"built in {image.build_seconds:.0f} s"
            click.echo(f"{image.reference}\t{image.size_bytes / 1e6:.0f} MB\t{built}")
    except DevError as error:
        _fail(error)
