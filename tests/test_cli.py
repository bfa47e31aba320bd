"""The ``upr-faces`` command, run in-process on the real models and photos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from upr_faces_engine.cli import main

from .conftest import ROOT, LabelledPhoto


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def test_analyze_prints_one_line_per_image(
    test_pack: Path, faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    images = [
        faces_dir / "multi_deepface_couple.jpg",
        broken,
        faces_dir / "noface_darknet_dog.jpg",
    ]
    code = main(["analyze", "--models", str(test_pack), *map(str, images)])
    assert code == 1  # the broken image fails at the end, the others went on
    first, second, third = _lines(capsys)
    assert first["image"] == str(images[0])
    assert len(first["faces"]) == 2
    face = first["faces"][0]
    assert len(face["box"]) == 4
    assert len(face["landmarks"]) == 5
    assert len(face["embedding"]) == 128
    assert np.linalg.norm(face["embedding"]) == pytest.approx(1.0, abs=1e-3)
    assert 0.5 <= face["score"] <= 1.0
    assert second["image"] == str(broken)
    assert "error" in second
    assert third == {"image": str(images[2]), "faces": []}


def test_match_finds_people(
    test_pack: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gallery = tmp_path / "gallery"
    probes: dict[str, Path] = {}
    for photo in labelled_photos:
        if not photo.identity.startswith("deepface_"):
            continue
        if photo.identity not in probes:
            probes[photo.identity] = photo.path
            continue
        (gallery / photo.identity).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo.path, gallery / photo.identity)
    args = ["match", "--models", str(test_pack), "--gallery", str(gallery)]
    args += ["--cache", str(tmp_path / "cache"), *map(str, probes.values())]
    assert main(args) == 0
    results = _lines(capsys)
    assert len(results) == 6
    for identity, result in zip(probes, results, strict=True):
        (face,) = result["faces"]
        best = face["candidates"][0]
        assert best["person_id"] == identity
        assert best["tier"] in ("match", "probable")
        assert len(face["candidates"]) == 3
    assert (tmp_path / "cache" / "embeddings.sqlite3").is_file()


def test_match_with_missing_gallery(
    test_pack: Path, faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["match", "--models", str(test_pack), "--gallery", str(tmp_path / "nope")]
    assert main([*args, str(faces_dir / "deepface_A_img2.jpg")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_missing_pack_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--models", str(tmp_path), "x.jpg"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err
    assert "Traceback" not in err


def test_module_entry_point_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "upr_faces_engine", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("analyze", "match", "bench"):
        assert command in out.stdout


def test_bench_prints_figures(
    test_pack: Path, faces_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = str(faces_dir / "multi_deepface_couple.jpg")
    assert main(["bench", "--models", str(test_pack), "--repeat", "2", image]) == 0
    (figures,) = _lines(capsys)
    assert figures["embedding_size"] == 128
    assert figures["detect_640_ms"]["p50"] > figures["detect_320_ms"]["p50"] > 0
    assert figures["embed_ms_per_face"]["single"] > 0
    assert set(figures["search_ms_512d"]) == {"1000", "10000", "100000"}
    assert figures["rss_mib"]["after_loading"] > 0
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():  # the GPU package
        assert figures["gpu"]["providers"][0] in ("tensorrt", "cuda")
        assert figures["gpu"]["detect_640_ms"]["p50"] > 0
    else:  # the CPU package: no GPU rows, and the reason why
        assert figures["gpu"]["providers"] is None
        assert "no CUDA or TensorRT" in figures["gpu"]["reason"]


def test_gallery_sync_against_dev_server(
    socket_enabled: None,
    test_pack: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`upr-faces gallery sync` against scripts/upr_dev_server, then `match` on the cache."""
    import socket
    import time

    gallery = tmp_path / "gallery"
    probe = None
    for photo in labelled_photos:
        if photo.identity.startswith("deepface_"):
            if probe is None and photo.identity == "deepface_E":
                probe = photo.path
                continue
            (gallery / photo.identity).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo.path, gallery / photo.identity)
    assert probe is not None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(ROOT / "scripts" / "upr_dev_server"), "--dir", str(gallery), "--port", str(port)],
        env={**__import__("os").environ, "UPR_API_KEY": "dev-key"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "dev server did not start"
            time.sleep(0.1)
        cache = tmp_path / "cache"
        args = ["gallery", "sync", "--api-url", url, "--models", str(test_pack)]
        args += ["--cache", str(cache)]
        monkeypatch.setenv("UPR_API_KEY", "wrong")
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "401" in err
        assert "Traceback" not in err
        assert "wrong" not in err
        monkeypatch.setenv("UPR_API_KEY", "dev-key")
        assert main(args) == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert json.loads(out[-1]) == {"persons": 6, "references": 15, "skipped": {}}
        match = ["match", "--models", str(test_pack), "--gallery", str(cache), str(probe)]
        assert main(match) == 0
        (result,) = _lines(capsys)
        assert result["faces"][0]["candidates"][0]["person_id"] == "deepface_E"
    finally:
        server.terminate()
        server.wait(10)
    assert main(args) == 1  # the server is gone: one line, non-zero
    assert "Traceback" not in capsys.readouterr().err
