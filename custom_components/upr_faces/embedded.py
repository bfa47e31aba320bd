"""The embedded engine: ``upr-faces serve`` as a child process of Home Assistant.

The engine's code comes with the integration (``engine/``, a package of its own) but is
never imported here: it runs in an environment of its own, ``<config>/upr_faces/
engine_env``, made with Home Assistant's Python and filled by pip from the package index
pip is configured with (``requirements.txt`` pinned as tested, then the engine itself).
Home Assistant's own requirement installer is not used: its constraints would pin the
engine's packages to Home Assistant's.

One engine per config entry, on a free loopback port, with its data in
``<config>/upr_faces/<entry id>/engine``. It is supervised (restarted with a growing delay
when it exits), its log lines go to Home Assistant's log under
``custom_components.upr_faces.engine``, and it keeps running across reloads of the entry;
it stops when the entry is disabled or removed, and when Home Assistant stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import Event, HomeAssistant
from homeassistant.util.hass_dict import HassKey

from .const import CONF_ENGINE_ID, DOMAIN

_LOGGER = logging.getLogger(__name__)
_ENGINE_LOG = logging.getLogger(f"custom_components.{DOMAIN}.engine")

ENGINE_PROJECT: Final = Path(__file__).parent / "engine"
PYTHON_OVERRIDE: Final = "UPR_FACES_ENGINE_PYTHON"
"""An existing Python that can run the engine (tests, development, pre-built setups)."""
START_TIMEOUT: Final = 180.0
STOP_TIMEOUT: Final = 10.0
MAX_RESTART_DELAY: Final = 300.0
INSTALL_STAGES: Final = ("environment", "requirements", "engine")
"""What :func:`async_install` tells its ``progress``, in order."""
SUPPORTED_MACHINES: Final = ("x86_64", "amd64", "aarch64", "arm64")
_LISTENING: Final = re.compile(r"^listening on (https?://\S+)$")
_LEVEL: Final = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): (.*)$")

DATA_ENGINES: Final[HassKey[dict[str, EmbeddedEngine]]] = HassKey(f"{DOMAIN}_embedded")
DATA_INSTALL: Final[HassKey[asyncio.Task[None]]] = HassKey(f"{DOMAIN}_engine_install")


class EngineSetupError(Exception):
    """The embedded engine cannot run here, or could not be installed or started.

    ``key`` is the translation key of the reason; ``detail`` what went wrong (logged).
    """

    def __init__(self, key: str, detail: str = "") -> None:
        super().__init__(detail or key)
        self.key = key
        self.detail = detail


def platform_problem() -> str | None:
    """Why the engine's wheels cannot install on this machine (None when they can).

    ONNX Runtime and OpenCV publish wheels for glibc Linux on x86-64 and aarch64 only:
    Home Assistant OS, the official container and Supervised run on Alpine (musl).
    """
    if sys.platform != "linux":
        return f"{sys.platform} is not Linux"
    libc, _version = platform.libc_ver()
    if libc != "glibc":
        return "the C library is not glibc (Alpine Linux uses musl)"
    if platform.machine().lower() not in SUPPORTED_MACHINES:
        return f"the processor ({platform.machine()}) is not x86-64 or aarch64"
    return None


def environment_folder(hass: HomeAssistant) -> Path:
    """The engine's own environment (shared by every entry)."""
    return Path(hass.config.path(DOMAIN, "engine_env"))


def engine_python(hass: HomeAssistant) -> Path:
    """The Python that runs the engine."""
    override = os.environ.get(PYTHON_OVERRIDE)
    if override:
        return Path(override)
    return environment_folder(hass) / "bin" / "python"


def _installed_marker(env: Path) -> Path:
    return env / ".upr_faces_engine"


def _engine_version() -> str:
    text = (ENGINE_PROJECT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else "0"


def is_installed(hass: HomeAssistant) -> bool:
    """Whether the engine's environment holds this integration's engine version.

    Blocking (reads files): run it in the executor.
    """
    if os.environ.get(PYTHON_OVERRIDE):
        return True
    marker = _installed_marker(environment_folder(hass))
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == _engine_version()


async def async_install(hass: HomeAssistant, progress: Callable[[str], None]) -> None:
    """Make the engine's environment: a venv, the pinned requirements, the engine.

    ``progress`` is told each stage (``environment``, ``requirements``, ``engine``).
    Raises EngineSetupError with the reason.
    """
    if os.environ.get(PYTHON_OVERRIDE):
        return
    if (problem := platform_problem()) is not None:
        raise EngineSetupError("unsupported_platform", problem)
    env = environment_folder(hass)
    python = env / "bin" / "python"
    if not python.exists():
        progress("environment")
        await _run([sys.executable, "-m", "venv", str(env)], "environment")
    progress("requirements")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    await _run([*pip, "-r", str(ENGINE_PROJECT / "requirements.txt")], "requirements")
    progress("engine")
    await _run([*pip, "--no-deps", "--upgrade", "--force-reinstall", str(ENGINE_PROJECT)], "engine")
    version = _engine_version()
    await hass.async_add_executor_job(_installed_marker(env).write_text, version + "\n", "utf-8")
    _LOGGER.info("The UPR Faces engine %s is installed in %s", version, env)


def start_install(
    hass: HomeAssistant, progress: Callable[[str], None] = lambda _stage: None
) -> asyncio.Task[None]:
    """The installation in progress, or a new one (one at a time for every entry)."""
    task = hass.data.get(DATA_INSTALL)
    if task is None or task.done():
        task = hass.async_create_background_task(
            async_install(hass, progress), f"{DOMAIN} engine installation"
        )
        hass.data[DATA_INSTALL] = task
    return task


def engine_key(entry: ConfigEntry[Any]) -> str:
    """What names an entry's embedded engine (its data folder): set by the flow."""
    return str(entry.data.get(CONF_ENGINE_ID) or entry.entry_id)


async def _run(command: list[str], stage: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-15:]
        detail = "\n".join(tail)
        _LOGGER.error("Installing the UPR Faces engine (%s) failed:\n%s", stage, detail)
        raise EngineSetupError("install_failed", detail)


class EmbeddedEngine:
    """One entry's engine process: started once, supervised, stopped for good."""

    def __init__(self, hass: HomeAssistant, key: str) -> None:
        self.hass = hass
        self.entry_id = key
        self.data = Path(hass.config.path(DOMAIN, key, "engine"))
        self.url: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._stopping = False
        self._listeners: list[Callable[[str], None]] = []
        self._unsub_stop: Callable[[], None] | None = hass.bus.async_listen_once(
            EVENT_HOMEASSISTANT_STOP, self._on_stop
        )

    @property
    def stopping(self) -> bool:
        """Whether the engine is being stopped for good."""
        return self._stopping

    @property
    def running(self) -> bool:
        """Whether the engine process is alive."""
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        """The engine's process id (for tests and diagnostics)."""
        return self._process.pid if self._process is not None else None

    def token(self) -> str:
        """The engine's token (blocking read: run it in the executor)."""
        return (self.data / "token").read_text(encoding="utf-8").strip()

    def on_url(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener`` with the new URL when a restarted engine listens elsewhere."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def async_start(self) -> str:
        """Start the engine (once) and wait until it answers; its URL."""
        if self._supervisor is None or self._supervisor.done():
            self._stopping = False
            self._started.clear()
            self._supervisor = self.hass.async_create_background_task(
                self._supervise(), f"{DOMAIN} embedded engine {self.entry_id}"
            )
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self._started.wait()
        except TimeoutError as err:
            raise EngineSetupError("engine_did_not_start", "no answer") from err
        if self.url is None:
            raise EngineSetupError("engine_did_not_start", "it exited")
        return self.url

    async def _spawn(self) -> asyncio.subprocess.Process:
        python = engine_python(self.hass)
        await self.hass.async_add_executor_job(lambda: self.data.mkdir(parents=True, exist_ok=True))
        env = {key: value for key, value in os.environ.items() if key != PYTHON_OVERRIDE}
        env["PYTHONUNBUFFERED"] = "1"
        media = [
            arg for folder in self.hass.config.media_dirs.values() for arg in ("--media", folder)
        ]
        return await asyncio.create_subprocess_exec(
            str(python),
            "-m",
            "upr_faces_engine",
            "serve",
            "--data",
            str(self.data),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *media,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )

    async def _supervise(self) -> None:
        delay = 5.0
        while not self._stopping:
            try:
                process = await self._spawn()
            except OSError as err:
                _LOGGER.error("The UPR Faces engine cannot be started: %s", err)
                self.url = None
                self._started.set()
                return
            self._process = process
            assert process.stdout is not None
            assert process.stderr is not None
            relays = [
                self.hass.async_create_background_task(
                    self._relay(process.stderr), f"{DOMAIN} engine log {self.entry_id}"
                )
            ]
            url = await self._read_url(process)
            relays.append(
                self.hass.async_create_background_task(
                    self._relay(process.stdout), f"{DOMAIN} engine output {self.entry_id}"
                )
            )
            if url is not None:
                first = self.url is None
                self.url = url
                self._started.set()
                delay = 5.0
                if not first:
                    for listener in list(self._listeners):
                        listener(url)
            code = await process.wait()
            await asyncio.gather(*relays)
            if self.stopping:
                return
            _LOGGER.warning(
                "The UPR Faces engine exited (code %s); starting it again in %.0f s", code, delay
            )
            if url is None and not self._started.is_set():
                self._started.set()  # async_start gives up; the supervisor goes on
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)

    async def _read_url(self, process: asyncio.subprocess.Process) -> str | None:
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                return None
            found = _LISTENING.match(line.decode(errors="replace").strip())
            if found:
                return found.group(1)

    async def _relay(self, stream: asyncio.StreamReader) -> None:
        """The engine's log lines into Home Assistant's log (the token is never in them)."""
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            found = _LEVEL.match(text)
            if found:
                level = logging.getLevelNamesMapping()[found.group(1)]
                _ENGINE_LOG.log(level, "%s: %s", found.group(2), found.group(3))
            elif text:
                _ENGINE_LOG.info("%s", text)

    async def async_stop(self) -> None:
        """Stop the engine for good (SIGTERM, then SIGKILL after 10 s)."""
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._supervisor = None
        self.url = None

    async def _on_stop(self, _event: Event) -> None:
        self._unsub_stop = None
        await self.async_stop()

    def forget(self) -> None:
        """Drop the Home Assistant stop listener (the engine was stopped for good)."""
        if self._unsub_stop is not None:
            self._unsub_stop()
            self._unsub_stop = None


def get_engine(hass: HomeAssistant, key: str) -> EmbeddedEngine:
    """The embedded engine named ``key`` (made on first use, kept across reloads)."""
    engines = hass.data.setdefault(DATA_ENGINES, {})
    engine = engines.get(key)
    if engine is None:
        engine = engines[key] = EmbeddedEngine(hass, key)
    return engine


async def async_stop_engine(hass: HomeAssistant, key: str) -> None:
    """Stop an embedded engine for good, if there is one."""
    engine = hass.data.get(DATA_ENGINES, {}).pop(key, None)
    if engine is not None:
        await engine.async_stop()
        engine.forget()


def remove_environment(hass: HomeAssistant) -> None:
    """Delete the engine's environment (blocking; when no entry is left)."""
    shutil.rmtree(environment_folder(hass), ignore_errors=True)
