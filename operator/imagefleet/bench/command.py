"""`imagefleet bench URL`: load-test a runtime and report what it sustained."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from imagefleet.bench.load import Plan, Run, generations_url, request_body, run_load
from imagefleet.bench.plot import require_matplotlib, write_plot
from imagefleet.bench.report import to_json, to_table
from imagefleet.bench.stats import RequestRecord, summarize

DEFAULT_REQUESTS = 50
_SIZE = re.compile(r"^\d+x\d+$")


def _check_size(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _SIZE.match(value):
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 512x512")
    return value


@click.command()
@click.argument("url")
@click.option("--requests", "requests_", type=click.IntRange(min=1),
              help=f"Total requests [default: {DEFAULT_REQUESTS}].")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Keep sending for this many seconds instead of a number of requests.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests in flight at once.")
@click.option("--prompt", default="a lighthouse on a cliff at dusk, oil painting", show_default=True,
              help="Prompt of every request.")
@click.option("--size", callback=_check_size, help="WIDTHxHEIGHT [default: the runtime's].")
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps [default: the runtime's].")
@click.option("--n", "images_per_request", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per request.")
@click.option("--seed", type=int, help="The same seed for every request [default: random].")
@click.option("--guidance-scale", type=float, help="Classifier-free guidance scale [default: the runtime's].")
@click.option("--negative-prompt", help="Negative prompt of every request.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds to wait for one response.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON on stdout.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a latency histogram and throughput over time to this PNG (needs imagefleet[plot]).")
def bench(
    url: str,
    requests_: int | None,
    duration: float | None,
    concurrency: int,
    prompt: str,
    size: str | None,
    steps: int | None,
    images_per_request: int,
    seed: int | None,
    guidance_scale: float | None,
    negative_prompt: str | None,
    timeout: float,
    as_json: bool,
    plot: Path | None,
) -> None:
    """Load-test the image runtime at URL (e.g. http://127.0.0.1:8000).

    Keeps --concurrency requests in flight against URL/v1/images/generations
    and prints p50/p95/p99 latency of successful requests, images per minute
    and errors by status code.
    """
    if requests_ is not None and duration is not None:
        raise click.UsageError("give --requests or --duration, not both")
    if plot is not None:
        require_matplotlib()
    plan = Plan(
        concurrency=concurrency,
        requests=DEFAULT_REQUESTS if requests_ is None and duration is None else requests_,
        duration_s=duration,
        timeout_s=timeout,
    )
    body = request_body(
        prompt=prompt,
        size=size,
        steps=steps,
        n=images_per_request,
        seed=seed,
        guidance_scale=guidance_scale,
        negative_prompt=negative_prompt,
    )
    run = _run_with_progress(url, body, plan)
    summary = summarize(run.records, run.wall_seconds)
    title = f"{generations_url(url)}, concurrency {concurrency}"
    if as_json:
        click.echo(to_json(summary, {"url": url, "concurrency": concurrency, "body": body}))
    else:
        console = Console()
        console.print(f"[bold]imagefleet bench[/] {title}", highlight=False)
        console.print(f"body: {json.dumps({k: v for k, v in body.items() if k != 'prompt'})}", highlight=False)
        console.print(to_table(summary))
    if plot is not None:
        write_plot(run.records, plot, title)
    if summary.succeeded == 0:
        raise click.ClickException(f"no request succeeded (errors: {summary.errors})")


def _run_with_progress(url: str, body: dict[str, Any], plan: Plan) -> Run:
    """Run the load with a progress bar on stderr (stdout stays clean for --json)."""
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    ]
    what = f"for {plan.duration_s:g} s" if plan.duration_s is not None else f"{plan.requests} requests"
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"benchmarking, {what}", total=plan.requests, failed=0)
        failed = 0

        def advance(record: RequestRecord) -> None:
            nonlocal failed
            failed += not record.ok
            progress.update(task, advance=1, failed=failed)

        return asyncio.run(run_load(url, body, plan, on_record=advance))
