"""`upr-faces watch` on a real clip: the right persons once each, nobody else, stats lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from upr_faces_engine.cli import main

from .conftest import LabelledPhoto
from .streams import make_clip


def test_watch_clip_finds_the_right_persons_once(
    test_pack: Path,
    faces_dir: Path,
    labelled_photos: list[LabelledPhoto],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gallery = tmp_path / "gallery"
    shown: dict[str, Path] = {}
    for photo in labelled_photos:
        if not photo.identity.startswith("deepface_"):
            continue
        if photo.identity in ("deepface_B", "deepface_F") and photo.identity not in shown:
            shown[photo.identity] = photo.path
            continue
        (gallery / photo.identity).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo.path, gallery / photo.identity)
    # B, six strangers, F: the clip loops about twice within the run
    clip = tmp_path / "clip.mp4"
    make_clip(
        clip,
        [shown["deepface_B"], faces_dir / "multi_insightface_t1.jpg", shown["deepface_F"]],
        seconds=2.0,
        gap=0.8,
    )
    args = ["watch", f"file://{clip}", "--models", str(test_pack), "--gallery", str(gallery)]
    args += ["--cache", str(tmp_path / "cache"), "--duration", "12", "--stats-every", "3"]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    events = [line for line in lines if line["type"] in ("match", "probable")]
    # B is a "probable" at best with this stand-in recognizer for some photos: any tier,
    # but once each within the cooldown, and nobody else
    assert sorted(e["person_id"] for e in events) == ["deepface_B", "deepface_F"]
    for event in events:
        assert event["camera"] == f"file://{clip}"
        assert 0.0 <= event["latency_s"] < 1.0
        assert event["track_id"] >= 1
    stats = [line for line in lines if line["type"] == "stats"]
    assert len(stats) >= 3
    last = stats[-1]
    assert last["state"] == "streaming"
    assert last["frames_read"] > 12 * 15 * 0.7
    assert last["frames_analysed"] + last["gated"] >= 12 * 5 * 0.7
    assert last["dropped"] <= 3
