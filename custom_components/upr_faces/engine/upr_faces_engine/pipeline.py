"""Per-camera work and the scheduler that shares one analyzer between all cameras.

Each camera's reader thread keeps only its newest frame. Worker threads visit the cameras
in turn: a camera is due ``detection_fps`` times a second; when it is due, its newest frame
is taken (older ones are simply overwritten, never queued), a cheap motion gate may skip
it, and otherwise faces are detected, tracked, embedded on the frames worth it and matched;
a track alerts once its evidence over several frames names a person (``tracker.py``).
Nothing here grows with time: no queue, bounded tracks, bounded stats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from .alerts import AlertTier, CooldownGate, MatchEvent
from .gallery import Gallery, Thresholds, Tier
from .tracker import (
    TIER_RANK,
    ThumbArray,
    Track,
    Tracker,
    TrackerConfig,
    face_quality,
    face_thumbnail,
)

if TYPE_CHECKING:
    from .analyzer import Analyzer

_LOGGER = logging.getLogger(__name__)

ImageArray = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]

# BGR colours of the boxes drawn on the live view
TIER_COLOURS: dict[Tier, tuple[int, int, int]] = {
    "match": (40, 40, 230),
    "probable": (0, 160, 255),
    "none": (200, 200, 200),
}
THUMB_SIZE = (64, 36)


class FrameLike(Protocol):
    """A decoded frame as the camera sources hand it over."""

    @property
    def image(self) -> ImageArray:
        """BGR ``uint8`` pixels."""

    @property
    def captured_at(self) -> float:
        """``time.monotonic()`` when the frame was read."""

    @property
    def seq(self) -> int:
        """Increasing frame number."""


class SourceLike(Protocol):
    """What the pipeline needs of a camera source (see ``sources.py``)."""

    def start(self) -> None:
        """Start reading."""

    def stop(self, timeout: float = ...) -> None:
        """Stop reading and join the reader thread."""

    def latest(self) -> FrameLike | None:
        """The newest frame, or ``None`` before the first one."""

    @property
    def state(self) -> str:
        """``connecting``, ``streaming`` or ``offline``."""


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Tunables of the real-time pipeline."""

    detection_fps: float = 5.0
    motion_threshold: float = 2.0
    forced_check_s: float = 2.0
    cooldown_s: float = 60.0
    top_k: int = 3
    thresholds: Thresholds = field(default_factory=Thresholds)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    jpeg_quality: int = 80


@dataclass(frozen=True, slots=True)
class FaceBox:
    """A face as drawn on the live view."""

    box: tuple[float, float, float, float]
    tier: Tier
    label: str | None
    track_id: int


@dataclass(frozen=True, slots=True)
class CameraStats:
    """A snapshot of one camera's counters."""

    camera: str
    state: str
    frames_analysed: int
    gated: int
    dropped: int
    detect_ms: float | None
    faces: int
    last_detection_at: float | None
    events: int
    analysis_errors: int = 0
    analysis_failing: bool = False  # the last frame analysed failed (see analysis_error)
    analysis_error: str | None = None


def encode_jpeg(image: ImageArray, quality: int = 80) -> bytes:
    """JPEG bytes of a BGR image (blocking: call it off the event loop)."""
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buffer)


def face_crop(image: ImageArray, box: tuple[float, float, float, float]) -> ImageArray:
    """The face with a margin of a quarter of its size around it."""
    x1, y1, x2, y2 = box
    margin_x, margin_y = (x2 - x1) * 0.25, (y2 - y1) * 0.25
    height, width = image.shape[:2]
    left, top = max(0, int(x1 - margin_x)), max(0, int(y1 - margin_y))
    right, bottom = min(width, int(x2 + margin_x)), min(height, int(y2 + margin_y))
    return image[top:bottom, left:right]


type Box = tuple[float, float, float, float]


def _box4(box: Any) -> Box:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def _mean_embedding(vectors: Sequence[Any]) -> tuple[float, ...] | None:
    if not vectors:
        return None
    mean = np.mean(np.asarray(vectors, dtype=np.float32), axis=0)
    return tuple(round(float(v), 6) for v in _unit(mean)) if np.any(mean) else None


def hide_faces(image: ImageArray, boxes: Sequence[Box]) -> ImageArray:
    """A copy of the image in which each box (with a margin) is pixelated beyond
    recognition: what an alert keeps of the bystanders next to the matched person."""
    out = image.copy()
    height, width = image.shape[:2]
    for x1, y1, x2, y2 in boxes:
        margin_x, margin_y = (x2 - x1) * 0.3, (y2 - y1) * 0.3
        left, top = max(0, int(x1 - margin_x)), max(0, int(y1 - margin_y))
        right, bottom = min(width, int(x2 + margin_x) + 1), min(height, int(y2 + margin_y) + 1)
        if right - left < 2 or bottom - top < 2:
            continue
        region = out[top:bottom, left:right]
        blocks = cv2.resize(region, (4, 4), interpolation=cv2.INTER_AREA)
        out[top:bottom, left:right] = cv2.resize(
            blocks, (right - left, bottom - top), interpolation=cv2.INTER_NEAREST
        )
    return out


def draw_faces(image: ImageArray, faces: list[FaceBox]) -> ImageArray:
    """A copy of the image with the face boxes, coloured by tier, and their labels."""
    out = image.copy()
    thickness = max(2, image.shape[1] // 400)
    for face in faces:
        x1, y1, x2, y2 = (int(v) for v in face.box)
        colour = TIER_COLOURS[face.tier]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        if face.label:
            scale = max(0.5, image.shape[1] / 1600)
            (tw, th), base = cv2.getTextSize(face.label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            top = max(0, y1 - th - base - 4)
            cv2.rectangle(out, (x1, top), (x1 + tw + 6, top + th + base + 4), colour, -1)
            cv2.putText(
                out,
                face.label,
                (x1 + 3, top + th + 2),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
    return out


REJECTED_FACE_MIN_COSINE: Final = 0.6
"""How close (cosine) a face must be to a face an operator rejected for a person for that
person to be left out of its candidates: the same wrong match does not come back."""


class Rejections:
    """Faces operators rejected for a person (their embeddings, kept for the retention by
    the engine): a face close to one of them is not matched to that person again, on any
    camera. Thread-safe; shared by every camera of a pipeline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_person: dict[str, npt.NDArray[np.float32]] = {}

    def replace(self, items: Sequence[tuple[str, Sequence[float]]]) -> None:
        """Hold exactly these (person id, face embedding) pairs."""
        grouped: dict[str, list[npt.NDArray[np.float32]]] = {}
        for person_id, vector in items:
            grouped.setdefault(person_id, []).append(_unit(vector))
        with self._lock:
            self._by_person = {pid: np.stack(rows) for pid, rows in grouped.items()}

    def add(self, person_id: str, vector: Sequence[float]) -> None:
        """One more rejected face of ``person_id``."""
        row = _unit(vector)[None, :]
        with self._lock:
            held = self._by_person.get(person_id)
            self._by_person[person_id] = row if held is None else np.vstack([held, row])

    def __len__(self) -> int:
        with self._lock:
            return sum(len(rows) for rows in self._by_person.values())

    def filter(self, vector: FloatArray, candidates: dict[str, float]) -> dict[str, float]:
        """``candidates`` without the persons this face was rejected for."""
        with self._lock:
            if not self._by_person:
                return candidates
            held = {pid: self._by_person[pid] for pid in candidates if pid in self._by_person}
        if not held:
            return candidates
        face = _unit(vector)
        refused = {
            pid
            for pid, rows in held.items()
            if rows.shape[1] == face.shape[0]
            and float(np.max(rows @ face)) >= REJECTED_FACE_MIN_COSINE
        }
        return {pid: sim for pid, sim in candidates.items() if pid not in refused}


def _unit(vector: Sequence[float] | FloatArray) -> npt.NDArray[np.float32]:
    row = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(row))
    return row / norm if norm > 0 else row


class CameraWorker:
    """The state the pipeline keeps for one camera: tracks, motion gate, stats, live view."""

    def __init__(
        self,
        camera: str,
        source: SourceLike,
        config: PipelineConfig,
        *,
        thresholds: Thresholds | None = None,
        rejections: Rejections | None = None,
    ) -> None:
        self.camera = camera
        self.source = source
        self.config = config
        self.rejections = rejections if rejections is not None else Rejections()
        self.thresholds = thresholds or config.thresholds
        self.tracker = Tracker(_tracker_config(config))
        self.cooldown = CooldownGate(config.cooldown_s)
        self.interval = 1.0 / config.detection_fps
        self.next_due = time.monotonic()
        self.busy = False
        self.last_seq = -1
        self.frames_analysed = 0
        self.gated = 0
        self.dropped = 0
        self.events = 0
        self.last_detection_at: float | None = None
        self._detect_ms: deque[float] = deque(maxlen=50)
        self._reference_thumb: npt.NDArray[np.int16] | None = None
        self._last_full_check = 0.0
        self._faces: list[FaceBox] = []
        self._view_lock = threading.Lock()
        self._view_cache: tuple[int, int, int | None, bytes] | None = None
        self._faces_version = 0
        self._failing = False
        self.analysis_errors = 0
        self.analysis_error: str | None = None

    def stats(self) -> CameraStats:
        """A snapshot of the counters."""
        detect = round(sum(self._detect_ms) / len(self._detect_ms), 2) if self._detect_ms else None
        return CameraStats(
            camera=self.camera,
            state=self.source.state,
            frames_analysed=self.frames_analysed,
            gated=self.gated,
            dropped=self.dropped,
            detect_ms=detect,
            faces=len(self._faces),
            last_detection_at=self.last_detection_at,
            events=self.events,
            analysis_errors=self.analysis_errors,
            analysis_failing=self._failing,
            analysis_error=self.analysis_error,
        )

    @property
    def faces(self) -> list[FaceBox]:
        """The faces of the last analysed frame."""
        return list(self._faces)

    def _motion(self, image: ImageArray, now: float) -> bool:
        """Whether the scene changed since the last analysed frame (or a check is due)."""
        thumb = cv2.resize(image, THUMB_SIZE, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY).astype(np.int16)
        reference = self._reference_thumb
        forced = now - self._last_full_check >= self.config.forced_check_s
        if reference is None or forced or self.tracker.active:
            moved = True
        else:
            moved = float(np.abs(grey - reference).mean()) >= self.config.motion_threshold
        if moved:
            self._reference_thumb = grey
            self._last_full_check = now
        return moved

    def process(
        self, frame: FrameLike, analyzer: Analyzer, gallery: Gallery | None
    ) -> list[MatchEvent]:
        """Analyse one frame: detect, track, embed the best frames, match, decide alerts."""
        image = frame.image
        now = time.monotonic()
        if not self._motion(image, now):
            self.gated += 1
            return []
        started = time.perf_counter()
        detections = analyzer.detect(image)
        self._detect_ms.append((time.perf_counter() - started) * 1000.0)
        self.frames_analysed += 1
        if detections:
            self.last_detection_at = time.time()
        tracks = self.tracker.update(detections, frame.captured_at)
        to_embed: list[tuple[int, float, ThumbArray | None]] = []
        if gallery is not None and gallery.reference_count:
            for index, (track, detection) in enumerate(zip(tracks, detections, strict=True)):
                quality = face_quality(image, detection, self.config.tracker.min_face_size)
                thumb = face_thumbnail(image, detection)
                pending = self.tracker.pending(track, self.thresholds)
                if self.tracker.wants_embedding(
                    track, quality, thumb, frame.captured_at, pending=pending
                ):
                    to_embed.append((index, quality, thumb))
        events: list[MatchEvent] = []
        if to_embed and gallery is not None:
            vectors = analyzer.embed(image, [detections[index] for index, _q, _t in to_embed])
            results = gallery.search(
                vectors, top_k=self.config.top_k, thresholds=self.thresholds, include_none=True
            )
            for row, ((index, quality, thumb), found) in enumerate(
                zip(to_embed, results, strict=True)
            ):
                track = self.tracker.add_embedding(
                    tracks[index],
                    vectors[row],
                    self.rejections.filter(
                        vectors[row],
                        {candidate.person_id: candidate.similarity for candidate in found},
                    ),
                    quality=quality,
                    thumb=thumb,
                    captured_at=frame.captured_at,
                )
                tracks[index] = track  # another person's face is a track of its own
                det = detections[index]
                others = [_box4(other.box) for other in detections if other is not det]
                event = self._decide(track, frame, image, now, others)
                if event is not None:
                    events.append(event)
        self._set_faces(
            [self._face_box(track, gallery) for track in tracks],
        )
        self.cooldown.forget(now)
        self.events += len(events)
        return events

    def _shown(self, track: Track) -> tuple[str, Tier, float] | None:
        """Who the live view names for a track: what its evidence says now, or what was
        announced for it when that is more (a weaker frame does not take a name away)."""
        verdict = self.tracker.verdict(track, self.thresholds)
        shown = (verdict.person_id, verdict.tier, verdict.similarity) if verdict else None
        for person_id, tier in track.announced.items():
            if person_id in track.rejected or person_id not in track.similarity:
                continue
            if shown is None or TIER_RANK[tier] > TIER_RANK[shown[1]]:
                shown = (person_id, tier, track.similarity[person_id])
        return shown

    def _decide(
        self,
        track: Track,
        frame: FrameLike,
        image: ImageArray,
        now: float,
        others: Sequence[Box] = (),
    ) -> MatchEvent | None:
        """The alert ``track`` raises now, if any. Its frame keeps the scene as evidence
        but not the bystanders: every other face (``others``) is pixelated."""
        verdict = self.tracker.verdict(track, self.thresholds)
        if verdict is None:
            return None
        person_id, similarity, tier = verdict.person_id, verdict.similarity, verdict.tier
        announced = track.announced.get(person_id, "none")
        if TIER_RANK[tier] <= TIER_RANK[announced]:
            return None
        alert_tier: AlertTier = "match" if tier == "match" else "probable"
        if not self.cooldown.allow(self.camera, person_id, alert_tier, track.track_id, now):
            track.announced[person_id] = tier
            return None
        track.announced[person_id] = tier
        box = tuple(float(v) for v in track.detection.box)
        box4 = (box[0], box[1], box[2], box[3])
        scene = hide_faces(image, others)
        snapshot = draw_faces(scene, [FaceBox(box4, tier, None, track.track_id)])
        return MatchEvent(
            camera=self.camera,
            person_id=person_id,
            similarity=round(similarity, 4),
            tier=alert_tier,
            track_id=track.track_id,
            detected_at=time.time(),
            latency_s=round(time.monotonic() - track.first_captured_at, 3),
            box=box4,
            upgraded=announced == "probable",
            snapshot_jpeg=encode_jpeg(snapshot, self.config.jpeg_quality),
            face_jpeg=encode_jpeg(face_crop(image, box4), 90),
            embedding=_mean_embedding(track.embeddings),
        )

    def _face_box(self, track: Track, gallery: Gallery | None) -> FaceBox:
        box = tuple(float(v) for v in track.detection.box)
        shown = self._shown(track)
        tier: Tier = "none"
        label = None
        if shown is not None:
            person_id, tier, similarity = shown
            if gallery is not None:
                person = gallery.persons.get(person_id)
                name = person.display_name or person.reference if person else person_id
                label = f"{name} {similarity:.2f}"
        return FaceBox((box[0], box[1], box[2], box[3]), tier, label, track.track_id)

    def _set_faces(self, faces: list[FaceBox]) -> None:
        with self._view_lock:
            self._faces = faces
            self._faces_version += 1

    def reject(self, track_id: int, person_id: str) -> bool:
        """An operator rejected this person for this track: never alert it again there."""
        track = self.tracker.tracks.get(track_id)
        if track is None:
            return False
        track.rejected.add(person_id)
        return True

    def forget_persons(self, keep: set[str]) -> None:
        """Drop what the tracks know of persons that can no longer match."""
        for track in list(self.tracker.tracks.values()):
            for person_id in [pid for pid in track.similarity if pid not in keep]:
                del track.similarity[person_id]
            for evidence in track.evidence:
                for person_id in [pid for pid in evidence.similarity if pid not in keep]:
                    del evidence.similarity[person_id]

    def annotated_jpeg(self, max_width: int | None = None) -> bytes | None:
        """The newest frame with face boxes, as JPEG; encoded only when asked (blocking)."""
        frame = self.source.latest()
        if frame is None:
            return None
        with self._view_lock:
            cached = self._view_cache
            faces = list(self._faces)
            version = self._faces_version
        if cached is not None and cached[:3] == (frame.seq, version, max_width):
            return cached[3]  # the same frame, boxes and width asked
        image = draw_faces(frame.image, faces)
        if max_width and image.shape[1] > max_width:
            scale = max_width / image.shape[1]
            image = np.asarray(
                cv2.resize(image, (max_width, int(image.shape[0] * scale))), dtype=np.uint8
            )
        data = encode_jpeg(image, self.config.jpeg_quality)
        with self._view_lock:
            self._view_cache = (frame.seq, version, max_width, data)
        return data


def _tracker_config(config: PipelineConfig) -> TrackerConfig:
    """Tracks survive at least three missed detections, whatever the detection rate."""
    max_age = max(config.tracker.max_age_s, 3.0 / config.detection_fps)
    return replace(config.tracker, max_age_s=max_age)


EventListener = Callable[[MatchEvent], None]


class Pipeline:
    """Runs every camera through one shared analyzer on a few worker threads."""

    def __init__(
        self,
        analyzer: Analyzer,
        gallery: Gallery | None = None,
        config: PipelineConfig | None = None,
        *,
        workers: int = 1,
    ) -> None:
        self.analyzer = analyzer
        self.config = config or PipelineConfig()
        self._gallery = gallery
        self._cameras: dict[str, CameraWorker] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers = max(1, workers)
        self._listeners: list[EventListener] = []
        self.rejections = Rejections()

    @property
    def gallery(self) -> Gallery | None:
        """The gallery faces are matched against."""
        return self._gallery

    def set_gallery(self, gallery: Gallery | None) -> None:
        """Swap in a new gallery; persons no longer open stop matching at once."""
        self._gallery = gallery
        keep = (
            {pid for pid, person in gallery.persons.items() if person.is_open} if gallery else set()
        )
        with self._lock:
            for worker in self._cameras.values():
                worker.forget_persons(keep)

    def add_listener(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener`` (from a worker thread) for every event; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add_camera(
        self, camera: str, source: SourceLike, *, thresholds: Thresholds | None = None
    ) -> CameraWorker:
        """Start a camera's source and include it in the schedule."""
        if camera in self._cameras:
            raise ValueError(f"camera {camera!r} is already in the pipeline")
        worker = CameraWorker(
            camera, source, self.config, thresholds=thresholds, rejections=self.rejections
        )
        source.start()
        with self._lock:
            self._cameras[camera] = worker
            self._lock.notify_all()
        return worker

    def remove_camera(self, camera: str, timeout: float = 5.0) -> None:
        """Stop a camera's source and take it out of the schedule."""
        with self._lock:
            worker = self._cameras.pop(camera, None)
            while worker is not None and worker.busy:
                self._lock.wait(0.05)
        if worker is not None:
            worker.source.stop(timeout)

    def camera(self, camera: str) -> CameraWorker | None:
        """The worker of a camera, if it is in the pipeline."""
        return self._cameras.get(camera)

    @property
    def cameras(self) -> list[CameraWorker]:
        """Every camera in the pipeline."""
        return list(self._cameras.values())

    def set_thresholds(self, camera: str, thresholds: Thresholds) -> None:
        """Change a camera's tiers."""
        worker = self._cameras.get(camera)
        if worker is not None:
            worker.thresholds = thresholds

    def update_config(self, config: PipelineConfig) -> None:
        """Apply new tunables to every camera (thresholds overrides are kept)."""
        self.config = config
        for worker in self._cameras.values():
            per_camera = worker.thresholds != worker.config.thresholds
            worker.config = config
            worker.interval = 1.0 / config.detection_fps
            worker.cooldown.cooldown_s = config.cooldown_s
            worker.tracker.config = _tracker_config(config)
            if not per_camera:
                worker.thresholds = config.thresholds

    def start(self) -> None:
        """Start the worker threads."""
        if self._threads:
            return
        self._stop.clear()
        for index in range(self._workers):
            thread = threading.Thread(
                target=self._run, name=f"upr_faces-analyzer-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers and every camera's source; no thread is left behind."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        for camera in list(self._cameras):
            self.remove_camera(camera, timeout)

    def _next_due(self) -> tuple[CameraWorker, FrameLike] | float:
        """A camera to process now with its newest frame, or how long to wait."""
        now = time.monotonic()
        wait = 0.1
        chosen: tuple[CameraWorker, FrameLike] | None = None
        for worker in self._cameras.values():
            if worker.busy:
                continue
            if worker.next_due > now:
                wait = min(wait, worker.next_due - now)
                continue
            frame = worker.source.latest()
            if frame is None or frame.seq == worker.last_seq:
                wait = min(wait, 0.01)
                continue
            if chosen is None or worker.next_due < chosen[0].next_due:
                chosen = (worker, frame)
        if chosen is None:
            return wait
        worker, frame = chosen
        late = now - worker.next_due
        if late > worker.interval:
            missed = int(late // worker.interval)
            worker.dropped += missed
            worker.next_due += missed * worker.interval
        worker.next_due += worker.interval
        worker.busy = True
        worker.last_seq = frame.seq
        return chosen

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                picked = self._next_due()
                if isinstance(picked, float):
                    self._lock.wait(max(0.002, picked))
                    continue
            worker, frame = picked
            events: list[MatchEvent] = []
            try:
                events = worker.process(frame, self.analyzer, self._gallery)
                if worker._failing:
                    _LOGGER.info("Camera %s is analysed again", worker.camera)
                    worker._failing = False
            except Exception as err:
                worker.analysis_errors += 1
                worker.analysis_error = f"{type(err).__name__}: {err}"[:300]
                if not worker._failing:
                    _LOGGER.exception("Analysing a frame of camera %s failed", worker.camera)
                    worker._failing = True
            finally:
                with self._lock:
                    worker.busy = False
                    self._lock.notify_all()
            for event in events:
                for listener in list(self._listeners):
                    try:
                        listener(event)
                    except Exception:
                        _LOGGER.exception("A match listener failed")

    def reject(
        self,
        camera: str,
        track_id: int,
        person_id: str,
        embedding: Sequence[float] | None = None,
    ) -> bool:
        """Never alert ``person_id`` again for this track of this camera; with the face's
        ``embedding``, nor for faces close to it on any camera (see :class:`Rejections`)."""
        if embedding is not None:
            self.rejections.add(person_id, embedding)
        worker = self._cameras.get(camera)
        return worker.reject(track_id, person_id) if worker else False


def with_thresholds(config: PipelineConfig, match: float, probable: float) -> PipelineConfig:
    """A copy of the config with other tiers."""
    return replace(config, thresholds=Thresholds(match=match, probable=probable))
