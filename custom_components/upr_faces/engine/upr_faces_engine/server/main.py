"""``upr-faces serve``: the engine as a service on loopback (or where it is told).

    upr-faces serve --data DIR [--host 127.0.0.1] [--port 8765] [--token-file FILE]
                    [--certfile CERT --keyfile KEY] [--media DIR]...
                    [--ray ADDRESS [--ray-replicas N] [--ray-cpus X] [--ray-gpus X]]

``DIR`` holds the persisted configuration, the event log, the outbox, caches, model packs
and alert images (the directory is 0700, files 0600). Camera sources naming a recorded clip
(``file://``) are accepted only inside a ``--media`` folder. The token is read from
``--token-file`` (default ``DIR/token``), created with a random value and mode 0600 when
missing, and never printed or logged. Once the API answers the process prints
``listening on http://HOST:PORT`` (``https`` with a certificate); SIGTERM or SIGINT stops
it cleanly.

With ``--ray ADDRESS`` (a Ray cluster's GCS, ``host:port``; needs the ``ray`` extra) the
frames are analysed by a Ray Serve application on that cluster, deployed there with the
``--ray-*`` options unless it is there already (``upr_faces_engine.ray_serve``); while the
cluster cannot be reached they are analysed in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import __version__
from ..ray_serve import add_options as add_ray_options
from ..ray_serve import options_from as ray_options_from
from .app import create_app
from .engine import Engine

_LOGGER = logging.getLogger(__name__)
DEFAULT_PORT = 8765
STOP_TIMEOUT = 8.0


def read_token(path: Path) -> str:
    """The token in ``path``; a new random one (0600) when the file is missing or empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``serve``."""
    parser.add_argument("--data", required=True, type=Path, help="the engine's data folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free one)")
    parser.add_argument("--token-file", type=Path, help="bearer token file (default DIR/token)")
    parser.add_argument("--certfile", type=Path, help="TLS certificate (PEM), with --keyfile")
    parser.add_argument("--keyfile", type=Path, help="TLS private key (PEM)")
    parser.add_argument(
        "--media",
        action="append",
        type=Path,
        metavar="DIR",
        help="a folder recorded clips (file://) may be read from; repeat for more "
        "(default: /media, /share and DIR/media)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="analyse frames on the Ray Serve cluster at ADDRESS (host:port of its GCS)",
    )
    add_ray_options(parser, prefix="ray-")


type Listening = Callable[[str, int, str], Awaitable[None]]
"""Called once the API answers, with (scheme, port, token): the add-on announces itself."""


def run(args: argparse.Namespace, *, on_listening: Listening | None = None) -> int:
    """Serve until stopped; the exit status."""
    if bool(args.certfile) != bool(args.keyfile):
        print("upr-faces serve: --certfile and --keyfile go together", file=sys.stderr)
        return 2
    os.umask(0o077)
    data: Path = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = read_token(args.token_file or data / "token")
    context: ssl.SSLContext | None = None
    if args.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
    try:
        media = [path.resolve() for path in args.media] if args.media else None
        ray: dict[str, Any] = {}
        if getattr(args, "ray", None):
            ray = {"ray_address": args.ray, "ray_options": asdict(ray_options_from(args))}
        asyncio.run(_serve(data, token, args.host, args.port, context, on_listening, media, **ray))
    except OSError as err:
        print(f"upr-faces serve: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    return 0


async def _serve(
    data: Path,
    token: str,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    on_listening: Listening | None,
    media: list[Path] | None,
    ray_address: str | None = None,
    ray_options: dict[str, Any] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    engine = Engine(
        data, version=__version__, media=media, ray_address=ray_address, ray_options=ray_options
    )
    await engine.start()
    app = create_app(engine, token)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port  # when 0 was asked
        scheme = "https" if context else "http"
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on {scheme}://{shown}:{bound}", flush=True)
        _LOGGER.info(
            "upr-faces engine %s listening on %s://%s:%s", __version__, scheme, shown, bound
        )
        announcing = (
            asyncio.ensure_future(on_listening(scheme, bound, token)) if on_listening else None
        )
        await stop.wait()
        _LOGGER.info("stopping")
        if announcing is not None:
            announcing.cancel()
    finally:
        await asyncio.wait_for(runner.cleanup(), STOP_TIMEOUT)
        await asyncio.wait_for(engine.stop(), STOP_TIMEOUT)
