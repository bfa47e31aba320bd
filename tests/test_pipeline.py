"""The real-time pipeline on real models and photos: tracking, tiers, cooldown, motion gate."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from upr_faces_engine.alerts import CooldownGate, MatchEvent
from upr_faces_engine.analyzer import Analyzer, read_image
from upr_faces_engine.gallery import Gallery, Thresholds, load_folder
from upr_faces_engine.models import find_pack
from upr_faces_engine.pipeline import CameraWorker, Pipeline, PipelineConfig

from .conftest import LabelledPhoto


@dataclass(frozen=True)
class StillFrame:
    image: np.ndarray
    captured_at: float
    seq: int


class SwitchableSource:
    """A stand-in camera showing whatever image the test puts in front of it."""

    def __init__(self, image: np.ndarray) -> None:
        self._image = image
        self._seq = 0
        self.state = "streaming"
        self.started = False
        self.stopped = False

    def show(self, image: np.ndarray) -> None:
        self._image = image

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped = True

    def latest(self) -> StillFrame:
        self._seq += 1
        return StillFrame(self._image, time.monotonic(), self._seq)


@pytest.fixture(scope="module")
def analyzer(test_pack: Path) -> Analyzer:
    return Analyzer(find_pack(test_pack), threads=1, square=False)


@pytest.fixture(scope="module")
def gallery(
    analyzer: Analyzer,
    labelled_photos: list[LabelledPhoto],
    tmp_path_factory: pytest.TempPathFactory,
) -> Gallery:
    """A-F from all their photos but the first one, which the tests show to the cameras."""
    root = tmp_path_factory.mktemp("gallery")
    seen: set[str] = set()
    for photo in labelled_photos:
        if not photo.identity.startswith("deepface_"):
            continue
        if photo.identity not in seen:
            seen.add(photo.identity)
            continue
        (root / photo.identity).mkdir(exist_ok=True)
        shutil.copy(photo.path, root / photo.identity)
    built, _report = load_folder(root, analyzer)
    return built


def _canvas(photo: Path) -> np.ndarray:
    """A photo placed on a 1280x720 frame, as a camera would see it."""
    image = read_image(photo)
    scale = min(1200 / image.shape[1], 680 / image.shape[0], 1.0)
    image = cv2.resize(image, None, fx=scale, fy=scale)
    frame = np.full((720, 1280, 3), 60, dtype=np.uint8)
    top = (720 - image.shape[0]) // 2
    left = (1280 - image.shape[1]) // 2
    frame[top : top + image.shape[0], left : left + image.shape[1]] = image
    return frame


def _process(
    worker: CameraWorker, source: SwitchableSource, analyzer: Analyzer, g: Gallery, n: int
):
    events: list[MatchEvent] = []
    for _ in range(n):
        events += worker.process(source.latest(), analyzer, g)
    return events


def test_one_alert_per_person_within_cooldown(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    source = SwitchableSource(_canvas(faces_dir / "deepface_C_img13.jpg"))
    worker = CameraWorker("cam1", source, PipelineConfig(cooldown_s=60))
    events = _process(worker, source, analyzer, gallery, 6)
    assert [(e.person_id, e.tier) for e in events] == [("deepface_C", "match")]
    event = events[0]
    assert event.camera == "cam1"
    assert event.similarity >= 0.55
    assert 0 <= event.latency_s < 5
    assert event.snapshot_jpeg is not None
    assert event.snapshot_jpeg[:2] == b"\xff\xd8"
    face = cv2.imdecode(np.frombuffer(event.face_jpeg or b"", np.uint8), cv2.IMREAD_COLOR)
    assert face is not None
    assert face.shape[0] < 720
    # at most 3 embeddings per track
    (track,) = worker.tracker.tracks.values()
    assert 1 <= len(track.embeddings) <= 3
    # the face leaves, comes back as a new track: still inside the cooldown, no new alert
    source.show(_canvas(faces_dir / "noface_darknet_dog.jpg"))
    worker.tracker.config = replace(worker.tracker.config, max_age_s=0.0)
    _process(worker, source, analyzer, gallery, 1)
    source.show(_canvas(faces_dir / "deepface_C_img13.jpg"))
    assert _process(worker, source, analyzer, gallery, 3) == []
    assert worker.stats().events == 1
    assert worker.stats().faces == 1
    assert worker.stats().last_detection_at is not None


def _side_by_side(left: Path, right: Path) -> np.ndarray:
    """Two photos next to each other on a 1280x720 frame."""
    frame = np.full((720, 1280, 3), 60, dtype=np.uint8)
    for index, photo in enumerate((left, right)):
        image = read_image(photo)
        scale = min(620 / image.shape[1], 680 / image.shape[0], 1.0)
        image = cv2.resize(image, None, fx=scale, fy=scale)
        top = (720 - image.shape[0]) // 2
        offset = 10 + index * 640
        frame[top : top + image.shape[0], offset : offset + image.shape[1]] = image
    return frame


def test_bystanders_are_hidden_in_the_alert_frame(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    """Person C next to a group of people who match no one: the alert's frame keeps the
    scene, but the detector finds no face in it except C's (every bystander pixelated);
    the face crop is C's alone."""
    frame = _side_by_side(
        faces_dir / "deepface_C_img13.jpg", faces_dir / "multi_insightface_t1.jpg"
    )
    in_view = analyzer.detect(frame)
    assert len(in_view) >= 4  # C and the group
    source = SwitchableSource(frame)
    worker = CameraWorker("cam1", source, PipelineConfig(cooldown_s=60))
    events = _process(worker, source, analyzer, gallery, 6)
    assert [(e.person_id, e.tier) for e in events] == [("deepface_C", "match")]
    stored = cv2.imdecode(np.frombuffer(events[0].snapshot_jpeg or b"", np.uint8), 1)
    assert stored.shape == frame.shape
    left_in_stored = [d for d in analyzer.detect(stored) if d.box[0] < 640]
    right_in_stored = [d for d in analyzer.detect(stored) if d.box[0] >= 640]
    assert len(left_in_stored) == 1  # C, still recognisable
    assert right_in_stored == []
    x1, _, x2, _ = events[0].box
    assert x2 < 640  # the crop is C's
    # the scene itself is kept: outside the faces, the right half is the photo
    assert float(np.abs(stored[:60, 640:].astype(int) - frame[:60, 640:]).mean()) < 8


def test_track_ids_are_never_reused_after_a_reload(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    """A rejection names its track by id: the same face seen by a camera rebuilt after a
    reload gets a new id, so an old rejection cannot silence it."""
    image = _canvas(faces_dir / "deepface_C_img13.jpg")
    ids = []
    for _run in range(2):  # a reload makes the camera's worker anew
        source = SwitchableSource(image)
        worker = CameraWorker("cam1", source, PipelineConfig(cooldown_s=0))
        events = _process(worker, source, analyzer, gallery, 3)
        ids.append(events[0].track_id)
    assert ids[0] != ids[1]
    assert ids[0] >= 10**12  # not a counter from 1
    source = SwitchableSource(image)
    worker = CameraWorker("cam1", source, PipelineConfig(cooldown_s=0))
    assert worker.reject(ids[0], "deepface_C") is False  # no such track in this run


def test_nobody_else_matches(analyzer: Analyzer, gallery: Gallery, faces_dir: Path) -> None:
    """A group photo of people outside the gallery, and animals, raise nothing."""
    for name in ("multi_insightface_t1.jpg", "noface_darknet_horses.jpg"):
        source = SwitchableSource(_canvas(faces_dir / name))
        worker = CameraWorker("cam", source, PipelineConfig())
        assert _process(worker, source, analyzer, gallery, 4) == []


def test_probable_tier_and_upgrade(analyzer: Analyzer, gallery: Gallery, faces_dir: Path) -> None:
    source = SwitchableSource(_canvas(faces_dir / "deepface_E_img20.jpg"))
    worker = CameraWorker(
        "cam", source, PipelineConfig(), thresholds=Thresholds(match=0.999, probable=0.3)
    )
    events = _process(worker, source, analyzer, gallery, 2)
    assert [(e.person_id, e.tier, e.upgraded) for e in events] == [
        ("deepface_E", "probable", False)
    ]
    # the operator lowers the match tier: the same track is upgraded to a match once
    worker.thresholds = Thresholds(match=0.5, probable=0.3)
    (track,) = worker.tracker.tracks.values()
    track.embeddings.clear()  # let the next frame be embedded again
    upgraded = _process(worker, source, analyzer, gallery, 2)
    assert [(e.person_id, e.tier, e.upgraded) for e in upgraded] == [("deepface_E", "match", True)]


def test_rejected_person_not_alerted_again_on_track(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    source = SwitchableSource(_canvas(faces_dir / "deepface_D_img16.jpg"))
    worker = CameraWorker("cam", source, PipelineConfig(cooldown_s=0))
    (first,) = _process(worker, source, analyzer, gallery, 1)
    assert worker.reject(first.track_id, first.person_id)
    (track,) = worker.tracker.tracks.values()
    track.announced.clear()
    track.embeddings.clear()
    assert _process(worker, source, analyzer, gallery, 3) == []
    assert not worker.reject(9999, "x")


def test_closed_person_stops_matching_at_once(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    source = SwitchableSource(_canvas(faces_dir / "deepface_F_img22.jpg"))
    pipeline = Pipeline(analyzer, gallery, PipelineConfig(cooldown_s=0))
    worker = pipeline.add_camera("cam", source)
    closed = Gallery(
        {
            pid: replace(p, status="closed") if pid == "deepface_F" else p
            for pid, p in gallery.persons.items()
        },
        gallery.references(),
        model_id=gallery.model_id,
        embedding_size=gallery.embedding_size,
    )
    # the track has already seen F, then F's file is closed
    worker.tracker.config = replace(worker.tracker.config, max_embeddings=1)
    worker.process(source.latest(), analyzer, None)
    pipeline.set_gallery(closed)
    assert _process(worker, source, analyzer, closed, 3) == []
    pipeline.stop()
    assert source.stopped


def test_motion_gate_skips_still_scenes(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    source = SwitchableSource(_canvas(faces_dir / "noface_darknet_giraffe.jpg"))
    worker = CameraWorker("cam", source, PipelineConfig(forced_check_s=3600))
    _process(worker, source, analyzer, gallery, 5)
    stats = worker.stats()
    assert stats.frames_analysed == 1
    assert stats.gated == 4
    # something moves: analysed again
    source.show(_canvas(faces_dir / "noface_darknet_eagle.jpg"))
    _process(worker, source, analyzer, gallery, 1)
    assert worker.stats().frames_analysed == 2


def test_annotated_view_draws_boxes(analyzer: Analyzer, gallery: Gallery, faces_dir: Path) -> None:
    frame = _canvas(faces_dir / "deepface_A_img10.jpg")
    source = SwitchableSource(frame)
    worker = CameraWorker("cam", source, PipelineConfig())
    _process(worker, source, analyzer, gallery, 2)
    (face,) = worker.faces
    assert face.tier == "match"
    assert face.label is not None
    assert "deepface_A" in face.label
    data = worker.annotated_jpeg()
    assert data is not None
    view = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert view.shape == frame.shape
    x1, y1 = int(face.box[0]), int(face.box[1])
    x2 = int(face.box[2])
    # the box's top edge is drawn in the match colour (red in BGR)
    edge = view[y1 + 1, (x1 + x2) // 2].astype(int)
    assert edge[2] > 150
    assert edge[0] < 120
    smaller = worker.annotated_jpeg(max_width=640)
    assert smaller is not None
    assert cv2.imdecode(np.frombuffer(smaller, np.uint8), cv2.IMREAD_COLOR).shape[1] == 640


def test_cooldown_gate() -> None:
    gate = CooldownGate(cooldown_s=60)
    assert gate.allow("c", "p", "probable", 1, now=0)
    assert not gate.allow("c", "p", "probable", 1, now=10)
    assert not gate.allow("c", "p", "match", 2, now=10)  # another track: no upgrade
    assert gate.allow("c", "p", "match", 1, now=10)  # upgrade on the same track
    assert not gate.allow("c", "p", "match", 1, now=20)
    assert gate.allow("other", "p", "match", 1, now=20)  # per camera
    assert gate.allow("c", "p", "match", 1, now=71)  # cooldown over
    gate.forget(now=500)
    assert gate._last == {}


def test_scheduler_shares_analyzer_fairly(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    """Four cameras on one worker thread: each is analysed at its rate, events flow."""
    photos = [
        "deepface_A_img10.jpg",
        "deepface_B_img12.jpg",
        "deepface_C_img13.jpg",
        "deepface_D_img16.jpg",
    ]
    sources = [SwitchableSource(_canvas(faces_dir / p)) for p in photos]
    pipeline = Pipeline(analyzer, gallery, PipelineConfig(detection_fps=4, forced_check_s=0.1))
    received: list[MatchEvent] = []
    lock = threading.Lock()

    def collect(event: MatchEvent) -> None:
        with lock:
            received.append(event)

    remove = pipeline.add_listener(collect)
    for index, source in enumerate(sources):
        pipeline.add_camera(f"cam{index}", source)
    before = set(threading.enumerate())
    pipeline.start()
    time.sleep(1.6)
    analysed = [w.stats().frames_analysed for w in pipeline.cameras]
    pipeline.stop()
    remove()
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]
    # every camera had its turns (4/s for 1.6 s, none starved, none above its rate)
    assert len(analysed) == 4
    assert all(2 <= n <= 8 for n in analysed), analysed
    assert pipeline.cameras == []  # stop() removed every camera
    assert all(s.stopped for s in sources)
    persons = sorted((e.camera, e.person_id) for e in received)
    assert persons == [
        ("cam0", "deepface_A"),
        ("cam1", "deepface_B"),
        ("cam2", "deepface_C"),
        ("cam3", "deepface_D"),
    ]
