"""The UPR Faces add-on: the engine under the Supervisor, announced to Home Assistant.

Run by the add-on's ``run`` script. It reads the add-on's options (``/data/options.json``,
written by the Supervisor from ``config.yaml``'s schema), serves the engine on port 8765 of
the add-on network with ``/data`` as its data folder (so Supervisor backups hold it), and
once the API answers sends a Supervisor discovery message (service ``upr_faces``: host,
port, token) so that Home Assistant offers the integration by itself. Outside the
Supervisor (no ``SUPERVISOR_TOKEN``) it only serves. Paths and the Supervisor's address
can be moved with ``UPR_FACES_OPTIONS``, ``UPR_FACES_DATA`` and ``SUPERVISOR_URL``
(the tests run it as a plain process that way).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, Final

import aiohttp

from .server.engine import API_VERSION
from .server.main import run

_LOGGER = logging.getLogger(__name__)

PORT: Final = 8765
SERVICE: Final = "upr_faces"
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
DEFAULTS: Final[dict[str, Any]] = {
    "log_level": "info",
    "ssl": False,
    "certfile": "fullchain.pem",
    "keyfile": "privkey.pem",
}


class OptionsError(ValueError):
    """The add-on's options cannot be used."""


def read_options(path: Path) -> dict[str, Any]:
    """The add-on's options over their defaults; OptionsError when they are not usable."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError) as err:
        raise OptionsError(f"cannot read {path}: {err}") from err
    if not isinstance(raw, dict):
        raise OptionsError(f"{path} does not hold an object")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise OptionsError(f"unknown option {unknown[0]!r}")
    options = {**DEFAULTS, **raw}
    if options["log_level"] not in LOG_LEVELS:
        raise OptionsError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    if not isinstance(options["ssl"], bool):
        raise OptionsError("ssl must be true or false")
    for key in ("certfile", "keyfile"):
        name = options[key]
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise OptionsError(f"{key} must be a file name in the ssl folder")
    return options


async def announce(scheme: str, port: int, token: str) -> None:
    """Tell the Supervisor (and through it Home Assistant) where the engine is."""
    supervisor_token = os.environ.get("SUPERVISOR_TOKEN")
    if not supervisor_token:
        _LOGGER.info("Not under the Supervisor (no SUPERVISOR_TOKEN): no discovery sent")
        return
    url = os.environ.get("SUPERVISOR_URL", "http://supervisor").rstrip("/") + "/discovery"
    message = {
        "service": SERVICE,
        "config": {
            "host": socket.gethostname(),
            "port": port,
            "ssl": scheme == "https",
            "token": token,
            "api_version": API_VERSION,
        },
    }
    headers = {"Authorization": f"Bearer {supervisor_token}"}
    delay = 2.0
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.post(url, json=message, headers=headers) as response:
                    if response.status < 300:
                        _LOGGER.info("Home Assistant was told about the engine (discovery)")
                        return
                    _LOGGER.warning(
                        "The Supervisor refused the discovery: HTTP %s", response.status
                    )
            except aiohttp.ClientError as err:
                _LOGGER.warning("The Supervisor cannot be reached (%s); trying again", err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)


def main(argv: list[str] | None = None) -> int:
    """The add-on's entry point."""
    options_path = Path(os.environ.get("UPR_FACES_OPTIONS", "/data/options.json"))
    data = Path(os.environ.get("UPR_FACES_DATA", "/data"))
    try:
        options = read_options(options_path)
    except OptionsError as err:
        print(f"upr-faces add-on: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, options["log_level"].upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ssl_folder = Path(os.environ.get("UPR_FACES_SSL", "/ssl"))
    args = argparse.Namespace(
        data=data,
        host=os.environ.get("UPR_FACES_HOST", "0.0.0.0"),
        port=int(os.environ.get("UPR_FACES_PORT", PORT)),
        token_file=None,
        certfile=ssl_folder / options["certfile"] if options["ssl"] else None,
        keyfile=ssl_folder / options["keyfile"] if options["ssl"] else None,
        media=None,  # the add-on's /media and /share (read-only) and /data/media
    )
    return run(args, on_listening=announce)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
