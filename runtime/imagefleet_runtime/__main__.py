"""`imagefleet-runtime`: flags (or IMAGEFLEET_* variables) -> settings -> the server.

`imagefleet-runtime download ...` fills a model cache instead (see `download.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import get_args

import uvicorn
from pydantic import ValidationError

from .settings import Settings

EXIT_BAD_SETTINGS = 2
EXIT_MODEL_FAILED = 1
# Idle keep-alive connections stay open longer than clients keep them (httpx and the gateway:
# 5 s; load balancers: 60 s), so a client never reuses a connection the server is closing.
KEEP_ALIVE_SECONDS = 75


def parser() -> argparse.ArgumentParser:
    """One flag per settings field; a flag beats its environment variable, which beats the default."""
    result = argparse.ArgumentParser(
        prog="imagefleet-runtime", description="Serve a diffusion model over an OpenAI-compatible HTTP API."
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"IMAGEFLEET_{name.upper()}"
        help_text = f"{field.description} (env {env}; default {field.default})"
        choices = get_args(field.annotation) or None
        if field.annotation is bool:
            result.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif choices and all(isinstance(choice, str) for choice in choices):
            result.add_argument(flag, choices=choices, default=argparse.SUPPRESS, help=help_text)
        else:
            result.add_argument(flag, default=argparse.SUPPRESS, help=help_text)
    return result


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Parse flags into Settings; exit 2 with pydantic's message when a value is invalid."""
    given = vars(parser().parse_args(argv))
    try:
        return Settings(**given)
    except ValidationError as error:
        print(f"imagefleet-runtime: invalid settings:\n{error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS) from error


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["download"]:
        from .download import main as download

        download(args[1:])
        return
    settings = load_settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # After the flags are known good; torch loads only with the diffusers engine.
    from imagefleet.http_limits import HeaderTimeoutProtocol
    from imagefleet.servers import CompanionServer, serve

    from .app import create_app, create_metrics_app
    from .server import DrainingServer

    failures: list[str] = []

    def fatal(message: str) -> None:
        failures.append(message)
        server.should_exit = True

    app = create_app(settings, on_fatal=fatal)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", timeout_keep_alive=KEEP_ALIVE_SECONDS
    )
    server = DrainingServer(config, drain=app.state.runtime.drain)
    metrics = CompanionServer(uvicorn.Config(
        create_metrics_app(app.state.runtime), host=settings.host, port=settings.metrics_port, http=HeaderTimeoutProtocol,
        log_level="warning", lifespan="off", timeout_keep_alive=KEEP_ALIVE_SECONDS,
    ))
    asyncio.run(serve(server, metrics))
    if failures:
        raise SystemExit(EXIT_MODEL_FAILED)


if __name__ == "__main__":
    main()
