"""The ways to run the engine besides a child process: the add-on (its run script and
options, as a plain process beside a Supervisor stand-in on 127.0.0.1), any host (the
engine's own package metadata, installed into a fresh environment) and the GPU set."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from .engine_process import ENGINE_PROJECT, ROOT, EngineClient, EngineProcess

ADDON = ROOT / "addon"
RUN = ADDON / "run"


def _engine_version() -> str:
    data = tomllib.loads((ENGINE_PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    return str(data["project"]["version"])


class Supervisor:
    """What the add-on talks to: ``POST /discovery`` with the Supervisor's token."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, dict[str, Any]]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _discovery(self, request: web.Request) -> web.Response:
        self.received.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({"result": "ok", "data": {"uuid": "0" * 32}})

    async def __aenter__(self) -> Supervisor:
        app = web.Application()
        app.router.add_post("/discovery", self._discovery)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def _addon_env(tmp_path: Path, options: dict[str, Any], **extra: str) -> dict[str, str]:
    options_file = tmp_path / "options.json"
    options_file.write_text(json.dumps(options), encoding="utf-8")
    return {
        **os.environ,
        "UPR_FACES_PYTHON": sys.executable,
        "UPR_FACES_OPTIONS": str(options_file),
        "UPR_FACES_DATA": str(tmp_path / "data"),
        "UPR_FACES_HOST": "127.0.0.1",
        "UPR_FACES_PORT": "0",
        "PYTHONPATH": os.pathsep.join([str(ENGINE_PROJECT), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


async def test_addon_serves_from_data_and_announces_itself(tmp_path: Path) -> None:
    """The run script reads the options, serves with /data as the data folder and, once
    the API answers, sends the Supervisor a discovery message Home Assistant can use."""
    async with Supervisor() as supervisor:
        env = _addon_env(
            tmp_path,
            {"log_level": "debug"},
            SUPERVISOR_URL=supervisor.url,
            SUPERVISOR_TOKEN="supervisor-token-123",
        )
        process = await asyncio.to_thread(
            subprocess.Popen, [str(RUN)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
            assert line.startswith(b"listening on http://127.0.0.1:"), line
            port = int(line.decode().strip().rsplit(":", 1)[1])
            for _ in range(100):
                if supervisor.received:
                    break
                await asyncio.sleep(0.1)
            authorization, message = supervisor.received[0]
            token = (tmp_path / "data" / "token").read_text(encoding="utf-8").strip()
            assert authorization == "Bearer supervisor-token-123"
            assert message["service"] == "upr_faces"
            assert message["config"]["port"] == port
            assert message["config"]["token"] == token
            assert message["config"]["ssl"] is False
            assert message["config"]["api_version"] == 1
            assert message["config"]["host"]
            engine = EngineProcess(tmp_path / "data")
            engine.url = f"http://127.0.0.1:{port}"
            async with EngineClient(engine) as api:
                info = await api.info()
            assert info["version"] == _engine_version()
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        stderr = process.stderr.read().decode() if process.stderr else ""
        process.stdout.close() if process.stdout else None
        process.stderr.close() if process.stderr else None
    assert "Home Assistant was told about the engine" in stderr
    assert token not in stderr
    assert "supervisor-token-123" not in stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"log_level": "loud"}, "log_level must be one of"),
        ({"colour": "red"}, "unknown option 'colour'"),
        ({"ssl": "yes"}, "ssl must be true or false"),
        ({"certfile": "../../etc/shadow"}, "certfile must be a file name"),
    ],
)
def test_addon_refuses_options_it_cannot_use(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    result = subprocess.run(
        [str(RUN)], env=_addon_env(tmp_path, options), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert not (tmp_path / "data").exists()


def test_addon_folder_is_all_the_supervisor_needs() -> None:
    """The Supervisor builds from the add-on folder alone: what the Dockerfile copies is
    there, the image installs the engine of this very release, versions agree, every
    option is translated."""
    config = yaml.safe_load((ADDON / "config.yaml").read_text(encoding="utf-8"))
    build = yaml.safe_load((ADDON / "build.yaml").read_text(encoding="utf-8"))
    dockerfile = (ADDON / "Dockerfile").read_text(encoding="utf-8")
    assert config["version"] == _engine_version()
    assert config["slug"] == "upr_faces"
    assert config["discovery"] == ["upr_faces"]
    assert set(config["arch"]) == set(build["build_from"]) == {"amd64", "aarch64"}
    assert all("debian" in image for image in build["build_from"].values())
    assert {"media:ro", "share:ro"} <= set(config["map"])
    assert config["video"] is True
    assert set(config["options"]) == set(config["schema"])
    for source in re.findall(r"^COPY\s+(\S+)\s+\S+$", dockerfile, re.MULTILINE):
        assert (ADDON / source).exists(), source
    assert "v${BUILD_VERSION}" in dockerfile
    assert "engine/requirements.txt" in dockerfile
    assert "--no-deps" in dockerfile
    assert os.access(RUN, os.X_OK)
    for language in ("en", "fr"):
        strings = yaml.safe_load(
            (ADDON / "translations" / f"{language}.yaml").read_text(encoding="utf-8")
        )
        assert set(strings["configuration"]) == set(config["schema"]), language
    assert (ROOT / "repository.yaml").is_file()
    for name in ("README.md", "DOCS.md", "CHANGELOG.md", "icon.png", "logo.png"):
        assert (ADDON / name).is_file(), name


def test_engine_installs_from_its_own_metadata(tmp_path: Path) -> None:
    """``pip install`` of the engine's folder gives the ``upr-faces`` command on any host;
    the installed copy (not the source tree) serves."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # the dependencies come from the test environment, the engine itself is built and installed
    deps = next(Path(p) for p in sys.path if p.endswith("site-packages") and ".venv" in p)
    (site / "deps.pth").write_text(f"{deps}\n", encoding="utf-8")
    uv = Path(sys.executable).parent / "uv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--python",
            str(venv / "bin" / "python"),
            str(ENGINE_PROJECT),
        ],
        check=True,
        env=env,
        timeout=300,
    )
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import upr_faces_engine; print(upr_faces_engine.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    assert where.startswith(str(venv))
    process = subprocess.Popen(
        [str(venv / "bin" / "upr-faces"), "serve", "--data", str(tmp_path / "data"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"listening on http://127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close() if process.stdout else None


@pytest.mark.parametrize(
    ("requirements", "platform"),
    [
        ("requirements.txt", "x86_64-manylinux_2_28"),
        ("requirements.txt", "aarch64-manylinux_2_28"),
        ("requirements-gpu.txt", "x86_64-manylinux_2_28"),
        ("requirements-gpu.txt", "aarch64-manylinux_2_34"),
    ],
)
@pytest.mark.parametrize("python", ["3.13", "3.14"])
def test_engine_requirements_are_complete_pins_with_wheels(
    requirements: str, platform: str, python: str, tmp_path: Path
) -> None:
    """Each requirements set pins everything it needs, has wheels for that platform, and
    agrees with the package's own dependency ranges; the GPU set swaps only ONNX Runtime."""
    path = ENGINE_PROJECT / requirements
    pins = dict(
        line.split("==", 1)
        for line in path.read_text(encoding="utf-8").splitlines()
        if "==" in line
    )
    uv = Path(sys.executable).parent / "uv"
    result = subprocess.run(
        [
            str(uv),
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--no-annotate",
            str(path),
            "--python-version",
            python,
            "--python-platform",
            platform,
            "--only-binary",
            ":all:",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved = dict(line.split("==", 1) for line in result.stdout.splitlines() if "==" in line)
    assert resolved == pins
    from packaging.requirements import Requirement

    declared = tomllib.loads((ENGINE_PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    for line in declared["project"]["dependencies"]:
        requirement = Requirement(line)
        name = requirement.name
        if name == "onnxruntime" and requirements == "requirements-gpu.txt":
            assert "onnxruntime" not in pins
            name = "onnxruntime-gpu"
        assert requirement.specifier.contains(pins[name]), (line, pins[name])
