"""Fixtures of the browser tests: Chromium through Playwright, and a whole UPR Faces stack.

* ``browser``: headless Chromium (Debian's ``/usr/bin/chromium``, never a downloaded one)
  driven by Playwright's sync API, one per test. Missing Chromium or Playwright fails the
  test when ``CI`` is set (with the install hint) and skips it otherwise.
* ``upr_stack`` (one per module): the development UPR registry in a subprocess, serving
  persons built from ``../shared/faces``; a real ``hass`` process on 127.0.0.1 with a fresh
  configuration folder, onboarded over the REST API; UPR Faces set up through the config
  flow REST API, a file camera through the subentry flow API, and a dashboard holding the
  alert card saved over the websocket; plus a second, non-admin user. Everything is
  stopped at the end of the module.

The helpers of ``scripts/hass_demo.py`` are async; while Playwright's sync API is active
the main thread already has a running loop, so :func:`run_async` runs them in a short-lived
thread of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_socket

from ..conftest import LabelledPhoto
from ..streams import free_port, make_clip

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM = Path(os.environ.get("UPR_CHROMIUM", "/usr/bin/chromium"))
# the test machines have no internet: no background connection may be attempted
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
INSTALL_HINT = (
    "the browser tests need Debian's Chromium and Playwright for Python: "
    "`apt-get install -y chromium` and `.venv/bin/pip install -r requirements_test.txt` "
    "(never `playwright install`: the browser comes from Debian)"
)
# three persons: each is one incident however often the clip loops, and the operator
# tests decide two of them; the third stays pending for the tests that need one
SHOWN = ("deepface_C", "deepface_D", "deepface_E")
API_KEY = "e2e-key-3c9d1a"

sys.path.insert(0, str(ROOT / "scripts"))
import hass_demo  # noqa: E402


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: {INSTALL_HINT}", pytrace=False)
    pytest.skip(f"{reason} (not in CI): {INSTALL_HINT}")


@pytest.fixture(autouse=True)
def _sockets(socket_enabled: None) -> None:
    """The tests talk to Home Assistant and the registry on 127.0.0.1."""


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; a failure in CI, a skip elsewhere, when it is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright for Python is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing")
    return CHROMIUM


@pytest.fixture
def browser(chromium: Path) -> Iterator[Any]:
    """A headless Chromium for one test (Playwright's sync API, stopped after the test)."""
    from playwright.sync_api import sync_playwright

    before = set(threading.enumerate())
    manager = sync_playwright().start()
    try:
        instance = manager.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            yield instance
        finally:
            instance.close()
    finally:
        manager.stop()
        # Playwright's loop leaves its executor's threads ending: let them end before the
        # Home Assistant test plugin counts threads left behind
        for thread in set(threading.enumerate()) - before:
            if thread.name.startswith("asyncio_"):
                thread.join(10)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``artifacts/e2e/``: screenshots and logs kept after the run (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def run_async[T](factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 120.0) -> T:
    """Run a coroutine to completion in a thread with its own event loop; its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(factory())
        except BaseException as err:  # handed over to the caller
            box["error"] = err

    thread = threading.Thread(target=target, name="e2e-async", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{factory} did not finish within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    result: T = box["value"]
    return result


def http_json(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    form: dict[str, str] | None = None,
    token: str | None = None,
    timeout: float = 15.0,
) -> Any:
    """A small blocking HTTP client (urllib) returning the decoded JSON answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data: bytes | None = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def wait_until[T](
    probe: Callable[[], T | None], what: str, timeout: float, interval: float = 0.25
) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (OSError, ValueError, urllib.error.URLError) as err:
            last_error = err
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def login(base_url: str, username: str, password: str) -> dict[str, Any]:
    """Log in through Home Assistant's login flow (as the login page does); the tokens."""
    client_id = hass_demo.CLIENT_ID
    flow = http_json(
        "POST",
        f"{base_url}/auth/login_flow",
        json_body={
            "client_id": client_id,
            "handler": ["homeassistant", None],
            "redirect_uri": client_id,
        },
    )
    result = http_json(
        "POST",
        f"{base_url}/auth/login_flow/{flow['flow_id']}",
        json_body={"client_id": client_id, "username": username, "password": password},
    )
    if result.get("type") != "create_entry":
        raise AssertionError(f"login of {username} refused: {result}")
    tokens: dict[str, Any] = http_json(
        "POST",
        f"{base_url}/auth/token",
        form={"grant_type": "authorization_code", "code": result["result"], "client_id": client_id},
    )
    return tokens


def create_user(base_url: str, admin_token: str, name: str, username: str, password: str) -> str:
    """A non-admin user with a password (``system-users`` group); its id."""
    created = run_async(
        lambda: hass_demo.websocket_call(
            base_url,
            admin_token,
            {"type": "config/auth/create", "name": name, "group_ids": ["system-users"]},
        )
    )
    user_id: str = created["user"]["id"]
    run_async(
        lambda: hass_demo.websocket_call(
            base_url,
            admin_token,
            {
                "type": "config/auth_provider/homeassistant/create",
                "user_id": user_id,
                "username": username,
                "password": password,
            },
        )
    )
    return user_id


def browser_tokens(base_url: str, tokens: dict[str, Any]) -> dict[str, Any]:
    """What the frontend keeps in ``localStorage.hassTokens`` after a login."""
    return {
        "access_token": tokens["access_token"],
        "token_type": "Bearer",
        "expires_in": tokens.get("expires_in", 1800),
        "refresh_token": tokens["refresh_token"],
        "hassUrl": base_url,
        "clientId": hass_demo.CLIENT_ID,
        "expires": int(time.time() * 1000) + int(tokens.get("expires_in", 1800)) * 1000,
    }


@dataclass
class Stack:
    """A running registry and Home Assistant, with what the tests need to reach them."""

    base_url: str
    api_url: str
    api_key: str
    owner: hass_demo.Login
    owner_name: str
    entry_id: str
    camera_entity: str
    dashboard_path: str
    config_dir: Path
    log: Path
    clip: Path
    operator: dict[str, str] = field(default_factory=dict)

    def received(self) -> dict[str, Any]:
        """What the registry received (``GET {api}/_received``)."""
        data: dict[str, Any] = http_json("GET", f"{self.api_url}/_received", token=self.api_key)
        return data

    def tokens_of(self, who: str) -> dict[str, Any]:
        """Fresh tokens of ``owner`` or ``operator``, in the frontend's storage format."""
        if who == "owner":
            username, password = self.owner.username, self.owner.password
        else:
            username, password = self.operator["username"], self.operator["password"]
        return browser_tokens(self.base_url, login(self.base_url, username, password))


def dashboard_config(camera_entity: str) -> dict[str, Any]:
    """The dashboard of the tests: the card first, then the camera and the hub sensors."""
    return {
        "title": "UPR",
        "views": [
            {
                "title": "Alerts",
                "path": "alerts",
                "cards": [
                    {"type": "custom:upr-alerts-card", "limit": 20},
                    {"type": "picture-entity", "entity": camera_entity, "camera_view": "auto"},
                    {
                        "type": "entities",
                        "entities": [
                            "sensor.upr_faces_active_streams",
                            "sensor.upr_faces_total_cameras",
                            "sensor.upr_faces_last_detection",
                            "sensor.upr_faces_gallery_size",
                            "sensor.upr_faces_alerts_awaiting_a_verdict",
                        ],
                    },
                ],
            }
        ],
    }


def _gallery(folder: Path, labelled_photos: list[LabelledPhoto]) -> Path:
    """A registry folder: every deepface person with all photos but the first one."""
    seen: set[str] = set()
    for photo in labelled_photos:
        if not photo.identity.startswith("deepface_"):
            continue
        if photo.identity not in seen:
            seen.add(photo.identity)
            continue
        person = folder / photo.identity
        person.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo.path, person)
    for person in folder.iterdir():
        letter = person.name[-1]
        (person / "person.json").write_text(
            json.dumps({"reference": f"UPR-2026-{letter}", "display_name": f"Personne {letter}"}),
            encoding="utf-8",
        )
    return folder


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def upr_stack(
    chromium: Path,
    test_pack: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: Path,
) -> Iterator[Stack]:
    """The registry, Home Assistant, the integration, a camera and the dashboard."""
    pytest_socket.enable_socket()  # module fixtures are set up before ``socket_enabled``
    work = tmp_path_factory.mktemp("e2e")
    gallery = _gallery(work / "gallery", labelled_photos)
    firsts: dict[str, Path] = {}
    for photo in labelled_photos:
        firsts.setdefault(photo.identity, photo.path)
    clip = work / "door.mp4"
    make_clip(clip, [firsts[name] for name in SHOWN], seconds=2.5, gap=1.0)

    registry_port = free_port()
    api_url = f"http://127.0.0.1:{registry_port}/api"
    registry_log = (work / "registry.log").open("wb")
    paths = [str(ROOT / "tools"), str(ROOT / "custom_components" / "upr_faces" / "engine")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    registry = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "upr_faces_dev.devserver",
            "--dir",
            str(gallery),
            "--key",
            API_KEY,
            "--port",
            str(registry_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=registry_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    hass: hass_demo.Hass | None = None
    try:
        wait_until(
            lambda: registry.poll() is None
            and http_json("GET", f"{api_url}/health", token=API_KEY)["status"] == "ok",
            "the UPR dev server",
            30,
        )
        port = free_port()
        config_dir = work / "config"
        hass_demo.write_config(config_dir, port, "en", media=work)
        hass = hass_demo.start_hass(config_dir, port)
        base_url = hass.base_url
        run_async(lambda: hass_demo.wait_until_up(hass, 150), timeout=160)
        owner = run_async(lambda: hass_demo.onboard(base_url, "en"))
        run_async(lambda: hass_demo.keep_http_config(hass, owner.token, "en"))
        entry_id = run_async(
            lambda: hass_demo.setup_registry_entry(
                base_url, owner.token, api_url, API_KEY, test_pack
            )
        )
        run_async(
            lambda: hass_demo.add_camera(base_url, owner.token, entry_id, "Door", f"file://{clip}")
        )

        def camera_entities() -> list[str]:
            # the new camera reloads the entry: its entities come a moment later
            entities = run_async(
                lambda: hass_demo.websocket_call(
                    base_url, owner.token, {"type": "config/entity_registry/list"}
                )
            )
            return [
                item["entity_id"]
                for item in entities
                if item["platform"] == "upr_faces" and item["entity_id"].startswith("camera.")
            ]

        cameras = wait_until(camera_entities, "the camera entity of UPR Faces", 60, interval=0.5)
        dashboard = run_async(
            lambda: hass_demo.save_dashboard(
                base_url, owner.token, "upr-alerts", dashboard_config(cameras[0])
            )
        )
        operator = {"name": "Opératrice Martin", "username": "martin", "password": "mot-de-passe-7"}
        create_user(
            base_url, owner.token, operator["name"], operator["username"], operator["password"]
        )
        yield Stack(
            base_url=base_url,
            api_url=api_url,
            api_key=API_KEY,
            owner=owner,
            owner_name="Operator",
            entry_id=entry_id,
            camera_entity=cameras[0],
            dashboard_path=f"{dashboard}/alerts",
            config_dir=config_dir,
            log=hass.log,
            clip=clip,
            operator=operator,
        )
    finally:
        if hass is not None:
            hass.stop()
            shutil.copy(hass.log, artifacts / "hass.log")
        _stop(registry)
        registry_log.close()
        shutil.copy(work / "registry.log", artifacts / "registry.log")
