"""`imagefleet gateway`: serve the fleet's front door (flags, or IMAGEFLEET_GATEWAY_* variables)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import click
import uvicorn
import yaml

from ..http_limits import HEADER_TIMEOUT_SECONDS, HeaderTimeoutProtocol
from ..kube import Kube
from ..servers import CompanionServer, serve
from .app import BODY_TIMEOUT_SECONDS, MAX_BODY_BYTES, create_app, create_metrics_app
from .auth import KeyRing, KeysFileWatch
from .errors import Unavailable
from .service import Gateway, Settings
from .watch import FleetWatch, demand_signaller

# Connections open at once; more are answered 503 + Retry-After and closed as they arrive.
MAX_CONNECTIONS = 4096
# Retry-After of a connection over the bound.
CONNECTION_RETRY_SECONDS = 1


class CappedProtocol(HeaderTimeoutProtocol):
    """The header timeout, and at most `max_connections` connections open: one more is answered
    503 with Retry-After (in OpenAI's error shape) and closed before a byte of it is read, so slow
    clients cannot grow the gateway's memory without bound."""

    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            body = json.dumps(Unavailable(f"the gateway has {self.max_connections} connections open; retry later",
                                          code="too_many_connections").body()).encode()
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                            b"retry-after: %d\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                            % (CONNECTION_RETRY_SECONDS, len(body), body))
            transport.close()


def _option(name: str, **kwargs: Any) -> Any:
    return click.option(f"--{name}", envvar=f"IMAGEFLEET_GATEWAY_{name.upper().replace('-', '_')}",
                        show_default=True, show_envvar=True, **kwargs)


@click.command("gateway")
@_option("host", default="0.0.0.0", help="Address to listen on.")
@_option("port", default=8080, type=int, help="Port to listen on.")
@_option("metrics-port", default=9102, type=int, help="Port of GET /metrics (only; keep it from clients).")
@_option("namespaces", default="", help="Comma-separated namespaces to watch (default: all).")
@_option("api-keys", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
         help="YAML file of API key hashes (see docs/gateway.md), read again when it changes; without it, no key "
              "is asked.")
@_option("hold-timeout", default=Settings.hold_timeout_seconds, type=float,
         help="Seconds a request waits for a pod to become ready before a 503.")
@_option("max-held", default=Settings.max_held, type=int, help="Requests waiting at once, over every route; more "
         "get a 503.")
@_option("max-queued-per-route", default=Settings.max_queued_per_route, type=int,
         help="Requests waiting for one model group and tier; more get a 429.")
@_option("max-queued-per-key", default=Settings.max_queued_per_key, type=int,
         help="Requests waiting for one model group and tier from one API key; more get a 429.")
@_option("max-connections", default=MAX_CONNECTIONS, type=int,
         help="Client connections open at once; more are answered 503 and closed.")
@_option("max-in-flight", default=Settings.max_in_flight, type=int,
         help="Generation requests served at once (reading a body, waiting or at a pod); more get a 503.")
@_option("max-in-flight-per-key", default=Settings.max_in_flight_per_key, type=int,
         help="Generation requests served at once for one API key; more get a 503.")
@_option("idempotency-window", default=Settings.idempotency_window_seconds, type=float,
         help="Seconds an answer is replayed to a request with the same Idempotency-Key.")
@_option("idempotency-max-bytes", default=Settings.idempotency_max_bytes, type=int,
         help="Bytes of answers kept for Idempotency-Key replays, in all (the oldest go first).")
@_option("poll-interval", default=Settings.poll_interval_seconds, type=float,
         help="Seconds between polls of each pod's /v1/load.")
@_option("max-body-bytes", default=MAX_BODY_BYTES, type=int, help="Largest request body; more is a 413.")
@_option("header-timeout", default=HEADER_TIMEOUT_SECONDS, type=float,
         help="Seconds a client has to send its request headers.")
@_option("body-timeout", default=BODY_TIMEOUT_SECONDS, type=float, help="Seconds a client has to send its body.")
def gateway(host: str, port: int, metrics_port: int, namespaces: str, api_keys: Path | None, hold_timeout: float,
            max_held: int, max_queued_per_route: int, max_queued_per_key: int, max_connections: int,
            max_in_flight: int, max_in_flight_per_key: int, idempotency_window: float, idempotency_max_bytes: int,
            poll_interval: float,
            max_body_bytes: int, header_timeout: float, body_timeout: float) -> None:
    """One OpenAI-compatible front door for the fleet: routes by model group and quality (tier), picks
    the least-loaded pod, overflows, queues by deadline, holds requests while a resource scales from zero."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll and per request otherwise
    try:
        keys = KeyRing.from_yaml(api_keys.read_text()) if api_keys else None
    except (ValueError, yaml.YAMLError) as error:
        raise click.BadParameter(f"{api_keys}: {error}", param_hint="--api-keys") from error
    keys_watch = KeysFileWatch(api_keys, keys) if api_keys and keys else None
    kube = Kube.from_environment()
    settings = Settings(hold_timeout_seconds=hold_timeout, max_held=max_held, max_queued_per_route=max_queued_per_route,
                        max_queued_per_key=max_queued_per_key, poll_interval_seconds=poll_interval,
                        max_in_flight=max_in_flight, max_in_flight_per_key=max_in_flight_per_key,
                        idempotency_window_seconds=idempotency_window, idempotency_max_bytes=idempotency_max_bytes)
    service = Gateway(settings, signal_demand=demand_signaller(kube), keys=keys)
    fleet_watch = FleetWatch(service, kube, [n.strip() for n in namespaces.split(",") if n.strip()])

    async def start() -> None:
        await fleet_watch.start()
        if keys_watch is not None:
            keys_watch.start()

    async def stop() -> None:
        if keys_watch is not None:
            await keys_watch.stop()
        await fleet_watch.stop()

    app = create_app(service, ready=lambda: fleet_watch.synced, lifespan_hooks=(start, stop),
                     max_body_bytes=max_body_bytes, body_timeout=body_timeout)
    HeaderTimeoutProtocol.header_timeout = header_timeout
    CappedProtocol.max_connections = max_connections
    main = uvicorn.Server(uvicorn.Config(app, host=host, port=port, http=CappedProtocol, log_level="warning",
                                         timeout_keep_alive=int(header_timeout)))
    metrics = CompanionServer(uvicorn.Config(create_metrics_app(service), host=host, port=metrics_port,
                                             http=HeaderTimeoutProtocol, log_level="warning", lifespan="off",
                                             timeout_keep_alive=int(header_timeout)))
    try:
        asyncio.run(serve(main, metrics))
    finally:
        kube.close()
