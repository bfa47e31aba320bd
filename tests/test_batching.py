"""Every core and batching: detection and embedding of several frames at once give what one
frame at a time gives; the scheduler's worker count follows the machine; a camera the
analyzer cannot keep up with is reported behind; a still scene is told to its source."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from upr_faces_engine import analyzer as analyzer_module
from upr_faces_engine import pipeline as pipeline_module
from upr_faces_engine.alerts import MatchEvent
from upr_faces_engine.analyzer import (
    Analyzer,
    default_session_threads,
    default_threads,
    read_image,
)
from upr_faces_engine.detector import Detection, ScrfdDetector
from upr_faces_engine.gallery import Gallery, load_folder
from upr_faces_engine.models import find_pack, inspect_model
from upr_faces_engine.pipeline import (
    CameraStats,
    CameraWorker,
    Pipeline,
    PipelineConfig,
    default_workers,
)

from .conftest import LabelledPhoto, make_gallery

PHOTOS = [
    "deepface_A_img10.jpg",
    "deepface_B_img12.jpg",
    "deepface_C_img13.jpg",
    "deepface_D_img16.jpg",
    "multi_deepface_couple.jpg",
    "multi_insightface_t1.jpg",
    "noface_darknet_dog.jpg",
]


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    captured_at: float
    seq: int


class Camera:
    """A stand-in camera showing whatever image the test puts in front of it; with
    ``hook=True`` it also records what the pipeline tells it of its scene (``set_still``)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self._seq = 0
        self.state = "streaming"
        self.stills: list[bool] = []

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def latest(self) -> Frame:
        self._seq += 1
        return Frame(self.image, time.monotonic(), self._seq)


class StillAwareCamera(Camera):
    """A camera source that can decode less while nothing moves."""

    def set_still(self, still: bool) -> None:
        self.stills.append(still)


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


def _batchable_copy(source: Path, target: Path, batch: str | int) -> Path:
    """The test pack's SCRFD with its batch dimension set to ``batch`` (a name: symbolic)
    and outputs that keep the images apart, ``(N, anchors, values)``, as InsightFace's
    batched exports have: its transposes put the batch first, its reshapes keep it."""
    model = onnx.load(str(source))
    graph = model.graph
    dim = graph.input[0].type.tensor_type.shape.dim[0]
    if isinstance(batch, str):
        dim.dim_param = batch
    else:
        dim.dim_value = batch
    for node in graph.node:
        if node.op_type == "Transpose":
            for attribute in node.attribute:
                if attribute.name == "perm" and list(attribute.ints) == [2, 3, 0, 1]:
                    del attribute.ints[:]
                    attribute.ints.extend([0, 2, 3, 1])
    for node in graph.node:
        if node.op_type == "Reshape":
            name = f"{node.output[0]}_batched_shape"
            width = int(_constant(graph, node.input[1])[-1])
            graph.initializer.append(
                numpy_helper.from_array(np.array([0, -1, width], dtype=np.int64), name)
            )
            node.input[1] = name
    outputs = [
        helper.make_tensor_value_info(
            out.name,
            onnx.TensorProto.FLOAT,
            [batch, None, out.type.tensor_type.shape.dim[-1].dim_value],
        )
        for out in graph.output
    ]
    del graph.output[:]
    graph.output.extend(outputs)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target


def _constant(graph: Any, name: str) -> np.ndarray:
    for initializer in graph.initializer:
        if initializer.name == name:
            return numpy_helper.to_array(initializer)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    raise KeyError(name)


@pytest.fixture(scope="module")
def analyzer(test_pack: Path) -> Analyzer:
    return Analyzer(find_pack(test_pack), threads=1, square=False)


@pytest.fixture(scope="module")
def batchable_pack(test_pack: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batchable_pack")
    _batchable_copy(test_pack / "det_500m.onnx", folder / "det_500m.onnx", "N")
    shutil.copy(test_pack / "mobilefacenet_128d.onnx", folder)
    return folder


@pytest.fixture(scope="module")
def frames(faces_dir: Path) -> list[np.ndarray]:
    return [_canvas(faces_dir / name) for name in PHOTOS]


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


class CountingSession:
    """An ONNX Runtime session that counts its runs and the images each took."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.batches: list[int] = []

    def get_inputs(self) -> Any:
        return self._session.get_inputs()

    def get_outputs(self) -> Any:
        return self._session.get_outputs()

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.batches.append(next(iter(feeds.values())).shape[0])
        return self._session.run(names, feeds)


def _counting_detector(analyzer: Analyzer) -> tuple[ScrfdDetector, CountingSession]:
    session = CountingSession(analyzer.detector._session)
    detector = ScrfdDetector(session, det_size=640, square=False)  # type: ignore[arg-type]
    return detector, session


def _assert_same(batched: list[Detection], single: list[Detection]) -> None:
    assert len(batched) == len(single)
    for one, other in zip(batched, single, strict=True):
        np.testing.assert_allclose(one.box, other.box, atol=0.05)
        np.testing.assert_allclose(one.landmarks, other.landmarks, atol=0.05)
        assert one.score == pytest.approx(other.score, abs=1e-4)


def test_the_graph_tells_whether_the_detector_takes_a_batch(
    test_pack: Path, batchable_pack: Path, tmp_path: Path
) -> None:
    assert inspect_model(test_pack / "det_500m.onnx").batch_size == 1  # the test pack: fixed
    assert inspect_model(batchable_pack / "det_500m.onnx").batch_size is None
    assert inspect_model(test_pack / "mobilefacenet_128d.onnx").batch_size is None
    fixed = _batchable_copy(test_pack / "det_500m.onnx", tmp_path / "det_500m.onnx", 1)
    assert inspect_model(fixed).batch_size == 1


def test_a_fixed_batch_detector_loops_one_frame_at_a_time(
    analyzer: Analyzer, frames: list[np.ndarray]
) -> None:
    """The test pack's SCRFD fixes its batch to 1: one run per frame, same faces."""
    assert analyzer.detector.max_batch == 1
    detector, session = _counting_detector(analyzer)
    batched = detector.detect_batch(frames)
    assert session.batches == [1] * len(frames)
    for image, found in zip(frames, batched, strict=True):
        _assert_same(found, analyzer.detect(image))
    assert [len(found) for found in batched[:4]] == [1, 1, 1, 1]
    assert len(batched[4]) == 2  # the couple
    assert batched[6] == []  # the dog


def test_batch_detection_finds_the_faces_single_detection_finds(
    analyzer: Analyzer, batchable_pack: Path, frames: list[np.ndarray]
) -> None:
    """A detector whose graph takes a batch runs several frames at once, same boxes."""
    batching = Analyzer(find_pack(batchable_pack), threads=1, square=False, max_batch=4)
    assert batching.detector.max_batch == 4
    session = CountingSession(batching.detector._session)
    batching.detector._session = session  # type: ignore[assignment]
    # a frame of another size needs another network input: it goes in a run of its own
    small = cv2.resize(frames[0], (640, 480))
    images = [*frames, small]
    batched = batching.detect_batch(images)
    assert sorted(session.batches) == [1, 3, 4]  # 7 frames of 1280x720 by 4, one of 640x480
    for image, found in zip(images, batched, strict=True):
        _assert_same(found, analyzer.detect(image))  # the test pack itself, one at a time
    assert sum(len(found) for found in batched) >= 7
    box = batched[0][0].box
    assert 400 < float(box[0]) < float(box[2]) < 900, box  # the face is mid-frame


def test_embed_batch_equals_one_frame_at_a_time(
    analyzer: Analyzer, frames: list[np.ndarray]
) -> None:
    items = [(image, analyzer.detect(image)) for image in frames]
    assert any(not dets for _image, dets in items)  # an item without faces is kept
    batched = analyzer.embed_batch(items)
    assert len(batched) == len(items)
    for (image, dets), rows in zip(items, batched, strict=True):
        assert rows.shape == (len(dets), analyzer.embedding_size)
        if dets:
            np.testing.assert_allclose(rows, analyzer.embed(image, dets), atol=1e-5)
            np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert analyzer.embed_batch([]) == []


def test_batched_pipeline_decides_what_one_camera_at_a_time_decides(
    analyzer: Analyzer, gallery: Gallery, frames: list[np.ndarray]
) -> None:
    """Four cameras processed together give the events, tracks and labels that each
    processed alone gives."""
    config = PipelineConfig(cooldown_s=0, forced_check_s=0)
    alone = [CameraWorker(f"cam{i}", Camera(frames[i]), config) for i in range(4)]
    pipeline = Pipeline(analyzer, gallery, config, workers=1)
    together = [pipeline.add_camera(f"cam{i}", Camera(frames[i])) for i in range(4)]
    base = time.monotonic()
    events_alone: list[MatchEvent] = []
    events_together: list[MatchEvent] = []
    for step in range(6):
        shown = [Frame(frames[i], base + step * 0.2, step + 1) for i in range(4)]
        for worker, frame in zip(alone, shown, strict=True):
            events_alone += worker.process(frame, analyzer, gallery)
        for _worker, events in pipeline.process_batch(list(zip(together, shown, strict=True))):
            events_together += events

    def summary(events: list[MatchEvent]) -> list[tuple[Any, ...]]:
        # track ids are unique in the process: compare them by order of appearance
        firsts = {e.track_id: None for e in events}
        order = {track_id: rank for rank, track_id in enumerate(firsts)}
        return [(e.camera, e.person_id, e.tier, order[e.track_id], e.similarity) for e in events]

    assert summary(events_together) == summary(events_alone)
    assert {e.person_id for e in events_alone} == {f"deepface_{c}" for c in "ABCD"}
    for one, other in zip(alone, together, strict=True):
        assert [(f.box, f.tier, f.label) for f in other.faces] == [
            (f.box, f.tier, f.label) for f in one.faces
        ]
        assert len(other.tracker.tracks) == len(one.tracker.tracks) == 1
        assert other.frames_analysed == one.frames_analysed == 6
    assert pipeline.stats().mean_batch == 4.0
    pipeline.stop()


def test_worker_count_and_threads_follow_the_cores(
    analyzer: Analyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module.os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    monkeypatch.setattr(analyzer_module.os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    assert default_workers() == 3
    assert default_threads() == 3
    assert default_session_threads() == 1  # one per worker: the workers are the parallelism
    assert default_session_threads(workers=1) == 3
    assert analyzer.threads == 1
    assert Pipeline(analyzer).workers == 3  # workers=None: one per core
    assert Pipeline(analyzer, workers=None).workers == 3
    assert Pipeline(analyzer, workers=1).workers == 1  # overridable
    wide = SimpleNamespace(threads=3)  # an analyzer of 3 threads a session: one worker
    assert Pipeline(wide).workers == 1  # type: ignore[arg-type]
    assert Pipeline(SimpleNamespace()).workers == 3  # type: ignore[arg-type]
    monkeypatch.setattr(pipeline_module.os, "sched_getaffinity", lambda _pid: {5})
    assert Pipeline(analyzer).workers == 1


def _run_cameras(
    analyzer: Analyzer, images: list[np.ndarray], config: PipelineConfig, seconds: float
) -> tuple[list[CameraStats], bool]:
    pipeline = Pipeline(analyzer, None, config, workers=1)
    for index, image in enumerate(images):
        pipeline.add_camera(f"cam{index}", Camera(image))
    pipeline.start()
    time.sleep(seconds)
    stats = [worker.stats() for worker in pipeline.cameras]
    overloaded = pipeline.overloaded
    assert pipeline.stats().overloaded == overloaded
    pipeline.stop()
    return stats, overloaded


def test_a_camera_the_analyzer_cannot_keep_up_with_is_behind(
    analyzer: Analyzer, frames: list[np.ndarray]
) -> None:
    """Eight cameras of faces at 60 detections a second on one worker and one thread:
    far more than it can do, so samples are dropped every second and it says so."""
    config = PipelineConfig(detection_fps=60.0)
    stats, overloaded = _run_cameras(analyzer, frames[:4] * 2, config, 4.0)
    assert all(s.behind for s in stats), stats
    assert all(s.dropped_recent > 0 for s in stats)
    assert all(0 < s.analysed_fps < 60.0 for s in stats)
    assert overloaded


def test_a_camera_the_analyzer_keeps_up_with_is_not_behind(
    analyzer: Analyzer, frames: list[np.ndarray]
) -> None:
    stats, overloaded = _run_cameras(analyzer, frames[:1], PipelineConfig(detection_fps=2.0), 3.0)
    (one,) = stats
    assert not one.behind
    assert one.dropped == one.dropped_recent == 0
    assert one.analysed_fps > 0
    assert not overloaded


def test_a_still_scene_is_told_to_the_source_once_and_motion_wakes_it(
    analyzer: Analyzer, frames: list[np.ndarray]
) -> None:
    empty = np.full((720, 1280, 3), 90, dtype=np.uint8)
    config = PipelineConfig(still_after_s=0.3, forced_check_s=60.0)
    source = StillAwareCamera(empty)
    worker = CameraWorker("door", source, config)

    def show_for(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            worker.process(source.latest(), analyzer, None)
            time.sleep(0.02)

    show_for(0.6)
    assert source.stills == [True]  # once, not at every still frame
    assert worker.stats().still
    source.image = frames[0]  # someone comes in: motion, then a face followed
    worker.process(source.latest(), analyzer, None)
    assert source.stills == [True, False]
    assert not worker.stats().still
    show_for(0.5)  # the face stays: tracked, so never still
    assert source.stills == [True, False]
    # a source without set_still (every current one) is left alone
    plain = CameraWorker("hall", Camera(empty), config)
    for _ in range(4):
        plain.process(plain.source.latest(), analyzer, None)
        time.sleep(0.15)
    assert plain.stats().still


def test_a_still_hook_that_fails_does_not_stop_the_analysis(
    analyzer: Analyzer, frames: list[np.ndarray]
) -> None:
    class Broken(StillAwareCamera):
        def set_still(self, still: bool) -> None:
            raise RuntimeError("decoder gone")

    source = Broken(np.full((720, 1280, 3), 90, dtype=np.uint8))
    worker = CameraWorker("door", source, PipelineConfig(still_after_s=0.0, forced_check_s=60))
    for _ in range(3):
        worker.process(source.latest(), analyzer, None)
    source.image = frames[0]
    worker.process(source.latest(), analyzer, None)
    assert worker.frames_analysed == 2
    assert len(worker.faces) == 1


def test_a_batch_with_a_failing_camera_fails_that_camera_only(
    analyzer: Analyzer, gallery: Gallery, frames: list[np.ndarray]
) -> None:
    pipeline = Pipeline(analyzer, gallery, PipelineConfig(cooldown_s=0), workers=1)
    good = pipeline.add_camera("good", Camera(frames[0]))
    bad = pipeline.add_camera("bad", Camera(frames[1]))
    broken = np.zeros((0, 0, 3), dtype=np.uint8)  # cv2.resize refuses it in the motion gate
    pipeline.process_batch([(good, good.source.latest()), (bad, Frame(broken, 0.0, 1))])
    assert good.stats().frames_analysed == 1
    assert not good.stats().analysis_failing
    assert bad.stats().analysis_failing
    assert bad.stats().analysis_errors == 1
    pipeline.stop()


def test_behind_is_sustained_drops_or_a_deep_backlog(frames: list[np.ndarray]) -> None:
    """The rule itself, on a clock of the test's choosing: one lump of drops is a hiccup,
    drops in three seconds of five are not, nor is a sample taken 2 s late."""
    worker = CameraWorker("door", Camera(frames[0]), PipelineConfig(detection_fps=5.0))
    now = time.monotonic() + 10.0
    worker.scheduled = True
    worker.next_due = now + 0.1
    worker.note_dropped(2, now - 0.5, late=0.5)
    assert not worker.is_behind(now)  # one hiccup
    worker.note_dropped(1, now - 1.5, late=0.4)
    worker.note_dropped(1, now - 2.5, late=0.4)
    assert worker.is_behind(now)  # 4 of 25 samples, in three different seconds
    worker.next_due = now + 6.1  # taken in time since
    assert not worker.is_behind(now + 6.0)  # and over once they are out of the window
    worker.note_dropped(12, now + 10.0, late=2.5)  # taken 2.5 s late: a deep backlog
    worker.next_due = now + 12.1
    assert worker.is_behind(now + 12.0)
    worker.next_due = now + 16.1
    assert not worker.is_behind(now + 16.0)
    worker.next_due = now + 20.0
    assert worker.is_behind(now + 22.5)  # due 2.5 s ago and still waiting
    worker.scheduled = False  # process() alone (no running pipeline) is never late
    assert not worker.is_behind(now + 22.5)
