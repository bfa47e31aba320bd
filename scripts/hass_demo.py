"""Run a real Home Assistant with UPR Faces on 127.0.0.1: for ``scripts/demo`` and the
browser tests.

Everything goes through Home Assistant's own public interfaces: the configuration folder
is written, ``hass`` is started, onboarding is done over the REST API, the integration is
set up through the config-flow REST API (the engine "on this machine": the embedded engine,
run on this same Python, which has the engine's packages, so nothing is installed) and
cameras through the subentry-flow API, and a dashboard is saved over the websocket. Run
with the project's ``.venv`` Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "http://127.0.0.1/"
USERNAME = "operator"
DASHBOARD = "upr-faces"

HTTP_BLOCK = """\
http:
  server_host: 127.0.0.1
  server_port: {port}
"""

MEDIA_BLOCK = """\
  media_dirs:
    local: {folder}
"""

CONFIGURATION = """\
homeassistant:
  name: UPR Faces demo
  unit_system: metric
  time_zone: Europe/Paris
  country: FR
  language: {language}
  currency: EUR
  internal_url: http://127.0.0.1:{port}
{media}{http}frontend:
config:
api:
logbook:
history:
system_health:
logger:
  default: warning
  logs:
    custom_components.upr_faces: info
"""


@dataclass(frozen=True, slots=True)
class Hass:
    """A running Home Assistant and how to reach it."""

    process: subprocess.Popen[bytes]
    base_url: str
    config_dir: Path
    log: Path

    def stop(self, timeout: float = 30.0) -> None:
        """Stop Home Assistant (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass(frozen=True, slots=True)
class Login:
    """The onboarded owner and a long-lived access token."""

    username: str
    password: str
    token: str
    refresh_token: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(
    config_dir: Path,
    port: int,
    language: str = "en",
    integration: Path | None = None,
    media: Path | None = None,
) -> None:
    """A minimal configuration: no integration that needs the internet or extra packages.

    ``integration`` is the UPR Faces folder to link in (this checkout's by default; the
    benches compare another version's). ``media`` is a media folder of Home Assistant's
    (where the engine may read clips; by default ``media`` in the configuration folder)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    folder = media or config_dir / "media"
    folder.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(
        CONFIGURATION.format(
            port=port,
            language=language,
            media=MEDIA_BLOCK.format(folder=json.dumps(str(folder))),
            http=HTTP_BLOCK.format(port=port),
        ),
        encoding="utf-8",
    )
    target = config_dir / "custom_components" / "upr_faces"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        source = integration or ROOT / "custom_components" / "upr_faces"
        target.symlink_to(source, target_is_directory=True)


def start_hass(config_dir: Path, port: int) -> Hass:
    """Start ``hass`` on the configuration folder (without installing anything)."""
    log = config_dir / "hass.log"
    # the embedded engine runs on this Python (it has the engine's packages): no pip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "UPR_FACES_ENGINE_PYTHON": sys.executable}
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "homeassistant", "--config", str(config_dir), "--skip-pip"],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        # not this checkout: `python -m` puts the working folder first on sys.path, and its
        # custom_components would win over the configuration folder's
        cwd=config_dir,
        start_new_session=True,
    )
    return Hass(process, f"http://127.0.0.1:{port}", config_dir, log)


async def wait_until_up(hass: Hass, seconds: float = 180.0) -> None:
    """Wait for the HTTP server (onboarding answers before anything else is needed)."""
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while True:
            if hass.process.poll() is not None:
                raise RuntimeError(f"hass exited early; see {hass.log}")
            try:
                async with session.get(f"{hass.base_url}/api/onboarding") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"hass did not answer within {seconds:.0f} s; see {hass.log}")
            await asyncio.sleep(0.5)


async def onboard(base_url: str, language: str = "en", password: str | None = None) -> Login:
    """Create the owner, finish onboarding, and get an access token."""
    password = password or secrets.token_urlsafe(12)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base_url}/api/onboarding/users",
            json={
                "client_id": CLIENT_ID,
                "name": "Operator",
                "username": USERNAME,
                "password": password,
                "language": language,
            },
        ) as response:
            response.raise_for_status()
            code = (await response.json())["auth_code"]
        async with session.post(
            f"{base_url}/auth/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID},
        ) as response:
            response.raise_for_status()
            tokens = await response.json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        for step, payload in (
            ("core_config", {}),
            ("analytics", {}),
            ("integration", {"client_id": CLIENT_ID, "redirect_uri": CLIENT_ID}),
        ):
            async with session.post(
                f"{base_url}/api/onboarding/{step}", json=payload, headers=headers
            ) as response:
                response.raise_for_status()
    return Login(USERNAME, password, tokens["access_token"], tokens["refresh_token"])


async def keep_http_config(hass: Hass, token: str, language: str) -> None:
    """Make the ``http:`` settings of configuration.yaml the ones Home Assistant keeps.

    Home Assistant 2026 moves them into its storage as a *pending* configuration that it
    reverts (with a restart) after five minutes unless an admin confirms it: confirm it
    (``http/config/promote``) and drop the block from the YAML, which is ignored from
    then on. Older releases have no such command and read the YAML at every start.
    """
    try:
        await websocket_call(hass.base_url, token, {"type": "http/config/promote"})
    except WebsocketError as err:
        if err.code == "unknown_command":
            return
        raise
    port = int(hass.base_url.rsplit(":", 1)[1])
    path = hass.config_dir / "configuration.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(HTTP_BLOCK.format(port=port), ""), encoding="utf-8")


async def save_dashboard(base_url: str, token: str, url_path: str, config: dict[str, Any]) -> str:
    """Create a dashboard of its own (once) and save ``config`` in it; its path.

    Home Assistant 2026 no longer shows a configuration saved without ``url_path`` at
    ``/lovelace``; a dashboard of its own works on every supported release.
    """
    dashboards = await websocket_call(base_url, token, {"type": "lovelace/dashboards/list"})
    if not any(item["url_path"] == url_path for item in dashboards):
        await websocket_call(
            base_url,
            token,
            {
                "type": "lovelace/dashboards/create",
                "url_path": url_path,
                "title": str(config.get("title") or url_path),
                "icon": "mdi:cctv",
                "mode": "storage",
                "require_admin": False,
                "show_in_sidebar": True,
            },
        )
    await websocket_call(
        base_url, token, {"type": "lovelace/config/save", "url_path": url_path, "config": config}
    )
    return f"/{url_path}"


async def _flow(
    session: aiohttp.ClientSession, url: str, token: str, payload: dict[str, Any]
) -> dict[str, Any]:
    async with session.post(
        url, json=payload, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        body: dict[str, Any] = await response.json()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {body}")
        if body.get("errors"):
            raise RuntimeError(f"{url}: {body['errors']}")
        return body


async def _drive_entry_flow(base_url: str, token: str, steps: list[dict[str, Any]]) -> str:
    """Start the integration's config flow and answer each step in turn; the entry id."""
    async with aiohttp.ClientSession() as session:
        flow_url = f"{base_url}/api/config/config_entries/flow"
        result = await _flow(session, flow_url, token, {"handler": "upr_faces"})
        if "embedded" in result.get("menu_options", []):
            # where the engine runs: this machine (a version before 0.2 has no such step)
            result = await _flow(
                session, f"{flow_url}/{result['flow_id']}", token, {"next_step_id": "embedded"}
            )
        for answer in steps:
            result = await _flow(session, f"{flow_url}/{result['flow_id']}", token, answer)
        if result.get("type") != "create_entry":
            raise RuntimeError(f"config flow ended with {result}")
        return str(result["result"]["entry_id"])


async def setup_folder_entry(base_url: str, token: str, gallery: Path, models: Path) -> str:
    """A UPR Faces entry on a local gallery folder and a custom model folder."""
    return await _drive_entry_flow(
        base_url,
        token,
        [
            {"next_step_id": "folder"},
            {"gallery_dir": str(gallery)},
            {"model_pack": "custom"},
            {"model_dir": str(models)},
        ],
    )


async def setup_registry_entry(
    base_url: str, token: str, api_url: str, api_key: str, models: Path
) -> str:
    """A UPR Faces entry on a registry (tested by the flow before it is saved)."""
    return await _drive_entry_flow(
        base_url,
        token,
        [
            {"next_step_id": "registry"},
            {"api_url": api_url, "api_key": api_key, "verify_ssl": False},
            {"model_pack": "custom"},
            {"model_dir": str(models)},
        ],
    )


async def add_camera(base_url: str, token: str, entry_id: str, name: str, source: str) -> None:
    """Add an IP camera (any source string) through the subentry flow."""
    async with aiohttp.ClientSession() as session:
        url = f"{base_url}/api/config/config_entries/subentries/flow"
        result = await _flow(session, url, token, {"handler": [entry_id, "camera"]})
        result = await _flow(session, f"{url}/{result['flow_id']}", token, {"next_step_id": "ip"})
        result = await _flow(
            session, f"{url}/{result['flow_id']}", token, {"name": name, "source": source}
        )
        if result.get("type") != "create_entry":
            raise RuntimeError(f"camera flow ended with {result}")


class WebsocketError(RuntimeError):
    """A websocket command answered with an error."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        super().__init__(f"{command}: {error}")
        self.code = str(error.get("code"))


async def websocket_call(base_url: str, token: str, message: dict[str, Any]) -> Any:
    """One websocket command (authenticated); its result."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{base_url}/api/websocket") as ws,
    ):
        await ws.receive_json()
        await ws.send_json({"type": "auth", "access_token": token})
        auth = await ws.receive_json()
        if auth.get("type") != "auth_ok":
            raise RuntimeError(f"websocket auth failed: {auth}")
        await ws.send_json({"id": 1, **message})
        while True:
            reply = await ws.receive_json()
            if reply.get("id") == 1 and reply.get("type") == "result":
                if not reply["success"]:
                    raise WebsocketError(message["type"], reply["error"])
                return reply.get("result")


HUB_SENSORS = (
    "active_streams",
    "total_cameras",
    "last_detection",
    "gallery_size",
    "pending_alerts",
)


async def demo_entities(base_url: str, token: str, entry_id: str) -> tuple[str, list[str]]:
    """The camera's and the hub sensors' entity ids, read from the entity registry: they
    are made from the translated names, so they depend on the language."""
    entries = await websocket_call(base_url, token, {"type": "config/entity_registry/list"})
    ours = [e for e in entries if e.get("config_entry_id") == entry_id]
    cameras = [e["entity_id"] for e in ours if e["entity_id"].startswith("camera.")]
    if not cameras:
        raise LookupError("no camera entity yet")
    by_unique = {e["unique_id"]: e["entity_id"] for e in ours}
    return cameras[0], [by_unique[f"{entry_id}_{key}"] for key in HUB_SENSORS]


def dashboard(camera_entity: str, sensors: list[str]) -> dict[str, Any]:
    """The demo dashboard: the camera, the alert card and the health sensors."""
    return {
        "title": "UPR Faces",
        "views": [
            {
                "title": "Surveillance",
                "path": "watch",
                "cards": [
                    {"type": "picture-entity", "entity": camera_entity, "camera_view": "live"},
                    {"type": "custom:upr-alerts-card"},
                    {"type": "entities", "entities": sensors},
                ],
            }
        ],
    }


def build_demo_media(faces: Path, work: Path) -> tuple[Path, Path]:
    """A gallery (all photos but the first of each person) and a clip of the first ones."""
    sys.path.insert(0, str(ROOT))
    from upr_faces_dev.clips import demo_media

    return demo_media(faces, work)


async def wait_for_entities(
    base_url: str, token: str, entry_id: str, seconds: float = 60
) -> tuple[str, list[str]]:
    """:func:`demo_entities` once the camera's entities exist."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await demo_entities(base_url, token, entry_id)
        except LookupError:  # KeyError too
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def run_demo(port: int, models: Path, faces: Path, config_dir: Path, language: str) -> int:
    """Start the demo and keep it running until interrupted."""
    if config_dir.exists():
        shutil.rmtree(config_dir)
    media = config_dir / "media" / "upr_faces_demo"
    media.mkdir(parents=True)
    print("demo: building the gallery and the camera clip…", file=sys.stderr)
    gallery, clip = build_demo_media(faces, media)
    write_config(config_dir, port, language)
    hass = start_hass(config_dir, port)
    try:
        print(f"demo: starting Home Assistant (log: {hass.log})…", file=sys.stderr)
        await wait_until_up(hass)
        login = await onboard(hass.base_url, language)
        await keep_http_config(hass, login.token, language)
        entry_id = await setup_folder_entry(hass.base_url, login.token, gallery, models)
        await add_camera(hass.base_url, login.token, entry_id, "Entrée", f"file://{clip}")
        camera, sensors = await wait_for_entities(hass.base_url, login.token, entry_id)
        path = await save_dashboard(
            hass.base_url, login.token, DASHBOARD, dashboard(camera, sensors)
        )
        print(
            f"\nUPR Faces demo on {hass.base_url}{path}/watch\n  user:     {login.username}\n"
            f"  password: {login.password}\n"
            "A match appears within a minute on the dashboard. Ctrl-C stops the demo.\n",
            flush=True,
        )
        return await asyncio.to_thread(hass.process.wait)
    finally:
        hass.stop()


def main() -> int:
    """``scripts/demo``."""
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--faces", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "demo_config" / "hass")
    parser.add_argument("--language", default="fr", choices=["fr", "en"])
    args = parser.parse_args()

    def interrupted(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM stops Home Assistant too, as Ctrl-C does

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return asyncio.run(run_demo(args.port, args.models, args.faces, args.config, args.language))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
