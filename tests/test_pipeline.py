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
from upr_faces_engine.pipeline import CameraWorker, Pipeline, PipelineConfig, Rejections

from .conftest import LabelledPhoto, make_gallery


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
    root = make_gallery(tmp_path_factory.mktemp("gallery"), labelled_photos)
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


def test_live_view_is_encoded_at_the_width_asked(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    """Two views of the same frame at two widths: each gets its own width (the cache holds
    the width asked, not only the frame)."""
    source = SwitchableSource(_canvas(faces_dir / "deepface_C_img13.jpg"))
    worker = CameraWorker("cam1", source, PipelineConfig())
    _process(worker, source, analyzer, gallery, 1)
    source.latest = lambda: StillFrame(source._image, 0.0, 7)  # type: ignore[method-assign]
    widths = []
    for width in (320, 640, 320, None):
        data = worker.annotated_jpeg(width)
        assert data is not None
        widths.append(cv2.imdecode(np.frombuffer(data, np.uint8), 1).shape[1])
    assert widths == [320, 640, 320, 1280]


def test_a_rejected_face_is_not_matched_to_that_person_again(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    """An operator rejected C for a face (its embedding is kept): the same face on
    another camera, on a new track, raises nothing for C; another person still alerts
    there, and once the rejection expires (the engine rebuilds the list) C alerts again."""
    rejections = Rejections()
    face_c = _canvas(faces_dir / "deepface_C_img13.jpg")
    first = SwitchableSource(face_c)
    door = CameraWorker("door", first, PipelineConfig(cooldown_s=0), rejections=rejections)
    (event,) = _process(door, first, analyzer, gallery, 4)
    assert (event.person_id, event.embedding is not None) == ("deepface_C", True)
    assert event.embedding is not None
    rejections.add("deepface_C", event.embedding)
    assert len(rejections) == 1

    second = SwitchableSource(face_c)
    gate = CameraWorker("gate", second, PipelineConfig(cooldown_s=0), rejections=rejections)
    assert _process(gate, second, analyzer, gallery, 6) == []
    second.show(_canvas(faces_dir / "deepface_D_img16.jpg"))
    assert {e.person_id for e in _process(gate, second, analyzer, gallery, 6)} == {"deepface_D"}

    rejections.replace([])  # expired
    third = SwitchableSource(face_c)
    hall = CameraWorker("hall", third, PipelineConfig(cooldown_s=0), rejections=rejections)
    assert {e.person_id for e in _process(hall, third, analyzer, gallery, 4)} == {"deepface_C"}


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


# persons whose first photos put the face at about the same place of the frame (box overlap
# above the tracker's 0.3), so that one taking the place of the other keeps the track
SAME_PLACE = {
    "deepface_A": "deepface_A_img10.jpg",
    "deepface_C": "deepface_C_img13.jpg",
    "deepface_D": "deepface_D_img16.jpg",
    "deepface_E": "deepface_E_img20.jpg",
}


@pytest.mark.parametrize(
    ("first", "second"),
    [(a, b) for a in SAME_PLACE for b in SAME_PLACE if a != b],
)
def test_a_new_face_in_the_place_of_another_is_recognised(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path, first: str, second: str
) -> None:
    """One person's face, then another's at the same place without a frame between: the
    track notices the new face, splits, and the new identity is announced on a track of
    its own, and the live view names it."""
    source = SwitchableSource(_canvas(faces_dir / SAME_PLACE[first]))
    worker = CameraWorker("cam", source, PipelineConfig(cooldown_s=60))
    before = _process(worker, source, analyzer, gallery, 3)
    assert [(e.person_id, e.tier) for e in before] == [(first, "match")]
    (old_track,) = worker.tracker.tracks.values()
    source.show(_canvas(faces_dir / SAME_PLACE[second]))
    after: list[MatchEvent] = []
    analysed = 0
    while not after and analysed < 10:
        after += _process(worker, source, analyzer, gallery, 1)
        analysed += 1
        if analysed == 1:  # the same place: the detection joined the old track first
            assert old_track.hits == 4
    assert [(e.person_id, e.tier, e.upgraded) for e in after] == [(second, "match", False)]
    assert after[0].track_id != before[0].track_id
    assert 0 <= after[0].latency_s < 2
    _process(worker, source, analyzer, gallery, 1)
    (face,) = worker.faces
    assert face.track_id == after[0].track_id
    assert face.tier == "match"
    assert face.label is not None
    assert face.label.startswith(second)
    assert first not in face.label


def test_a_still_face_is_embedded_again_every_two_seconds_only(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    """What re-checking a track costs: a face that does not change, analysed 4 times a
    second for 5 s of captured time, is embedded on its first frame and then once every
    2 s (3 embeddings for 20 frames); one alert, one track."""
    image = _canvas(faces_dir / "deepface_C_img13.jpg")
    worker = CameraWorker("cam", SwitchableSource(image), PipelineConfig(cooldown_s=0))
    events: list[MatchEvent] = []
    embedded_at: list[float] = []
    for seq in range(20):
        at = 1000.0 + 0.25 * seq
        events += worker.process(StillFrame(image, at, seq), analyzer, gallery)
        (track,) = worker.tracker.tracks.values()
        if len(track.embeddings) > len(embedded_at):
            embedded_at.append(at - 1000.0)
    assert embedded_at == [0.0, 2.0, 4.0]
    assert [(e.person_id, e.tier) for e in events] == [("deepface_C", "match")]
    assert track.track_id == events[0].track_id


def test_a_match_is_decided_on_more_than_one_frame(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    """A's face resembles A by 0.84. With the match tier at 0.8 (and probable at 0.75), one
    frame of it is not enough for any tier: the face shown once, then gone, raises nothing.
    Shown steadily, the second embedding agrees and it is a match at once. With the match
    tier at 0.7, 0.84 is far enough above it to decide on the one frame."""
    face = _canvas(faces_dir / "deepface_A_img10.jpg")
    dog = _canvas(faces_dir / "noface_darknet_dog.jpg")
    strict = Thresholds(match=0.8, probable=0.75)
    source = SwitchableSource(face)
    worker = CameraWorker("cam", source, PipelineConfig(cooldown_s=0), thresholds=strict)
    assert _process(worker, source, analyzer, gallery, 1) == []
    (track,) = worker.tracker.tracks.values()
    assert 0.8 <= track.similarity["deepface_A"] < 0.9
    (only,) = worker.faces
    assert (only.tier, only.label) == ("none", None)  # not decided: not labelled either
    source.show(dog)
    assert _process(worker, source, analyzer, gallery, 4) == []
    assert worker.stats().events == 0

    source = SwitchableSource(face)
    worker = CameraWorker("cam", source, PipelineConfig(cooldown_s=0), thresholds=strict)
    per_frame = [_process(worker, source, analyzer, gallery, 1) for _ in range(4)]
    assert [[(e.person_id, e.tier) for e in events] for events in per_frame] == [
        [],
        [("deepface_A", "match")],
        [],
        [],
    ]
    assert 0.8 <= per_frame[1][0].similarity < 0.9

    source = SwitchableSource(face)
    lenient = Thresholds(match=0.7, probable=0.6)
    worker = CameraWorker("cam", source, PipelineConfig(cooldown_s=0), thresholds=lenient)
    (event,) = _process(worker, source, analyzer, gallery, 1)
    assert (event.person_id, event.tier) == ("deepface_A", "match")


def test_a_poor_face_needs_more_agreeing_frames(
    analyzer: Analyzer, gallery: Gallery, faces_dir: Path
) -> None:
    """A's face, small and blurred: its quality (about 0.6) makes each embedding weigh 3/4
    of a good one's, so it takes three agreeing frames to match instead of two."""
    small = cv2.resize(
        read_image(faces_dir / "deepface_A_img10.jpg"),
        None,
        fx=0.3,
        fy=0.3,
        interpolation=cv2.INTER_AREA,
    )
    photo = cv2.GaussianBlur(small, (7, 7), 0)
    frame = np.full((720, 1280, 3), 60, dtype=np.uint8)
    frame[100 : 100 + photo.shape[0], 100 : 100 + photo.shape[1]] = photo
    source = SwitchableSource(frame)
    worker = CameraWorker(
        "cam", source, PipelineConfig(cooldown_s=0), thresholds=Thresholds(0.58, 0.52)
    )
    per_frame = [_process(worker, source, analyzer, gallery, 1) for _ in range(4)]
    (track,) = worker.tracker.tracks.values()
    assert 0.58 <= track.similarity["deepface_A"] < 0.62  # never decisive alone
    assert [[(e.person_id, e.tier) for e in events] for events in per_frame] == [
        [],
        [],
        [("deepface_A", "match")],
        [],
    ]
    assert [round(e.weight, 2) for e in track.evidence] == [0.75, 0.75, 0.75]


def test_a_tie_between_two_persons_is_no_match(
    analyzer: Analyzer,
    labelled_photos: list[LabelledPhoto],
    faces_dir: Path,
    tmp_path: Path,
) -> None:
    """Two persons whose references are the same photos: a face that resembles both alike
    names neither, in alerts or on the live view; C, in the same gallery, still matches."""
    root = tmp_path / "gallery"
    for photo in labelled_photos:
        if photo.path.name in ("deepface_A_img10.jpg", "deepface_C_img13.jpg"):
            continue  # the photos shown to the camera
        if photo.identity == "deepface_A":
            for twin in ("twin_1", "twin_2"):
                (root / twin).mkdir(parents=True, exist_ok=True)
                shutil.copy(photo.path, root / twin)
        elif photo.identity == "deepface_C":
            (root / "deepface_C").mkdir(parents=True, exist_ok=True)
            shutil.copy(photo.path, root / "deepface_C")
    twins, _report = load_folder(root, analyzer)
    source = SwitchableSource(_canvas(faces_dir / "deepface_A_img10.jpg"))
    worker = CameraWorker("cam", source, PipelineConfig(cooldown_s=0))
    assert _process(worker, source, analyzer, twins, 6) == []
    (track,) = worker.tracker.tracks.values()
    assert track.similarity["twin_1"] == pytest.approx(track.similarity["twin_2"], abs=1e-5)
    assert track.similarity["twin_1"] > 0.8  # far above the match tier, were it alone
    (face,) = worker.faces
    assert (face.tier, face.label) == ("none", None)
    source = SwitchableSource(_canvas(faces_dir / "deepface_C_img13.jpg"))
    worker = CameraWorker("cam", source, PipelineConfig(cooldown_s=0))
    events = _process(worker, source, analyzer, twins, 3)
    assert [(e.person_id, e.tier) for e in events] == [("deepface_C", "match")]
