"""Per-camera work and the scheduler that shares one analyzer between all cameras.

Each camera's reader thread keeps only its newest frame. Worker threads (one per core by
default) visit the cameras: a camera is due ``detection_fps`` times a second; a worker
takes the cameras due now, oldest due first (up to ``max_batch``), with their newest frames
(older ones are simply overwritten, never queued). A cheap motion gate may skip a frame;
the others go through the detector together (one run for several frames where the model
allows a batch), the faces worth embedding of all of them through the recognizer in one
batch, and each camera then tracks, matches and decides on its own; a track alerts once its
evidence over several frames names a person (``tracker.py``). A camera whose samples are
dropped for a few seconds because the analyzer cannot keep up is reported ``behind`` (and
the pipeline ``overloaded``), never silently. A source that can decode less while its scene
is still is told so (``set_still``). Nothing here grows with time: no queue, bounded
tracks, bounded stats.
"""

from __future__ import annotations

import logging
import math
import os
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
    from .detector import Detection

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
DEFAULT_MAX_BATCH: Final = 8
"""The most cameras one worker takes at once (their frames go through the models together)."""
STATS_WINDOW_S: Final = 5.0
"""The recent window of ``analysed_fps`` and ``behind``."""
BEHIND_MIN_SHARE: Final = 0.1
"""A camera is behind when more than this share of its samples due in the window were
dropped ..."""
BEHIND_MIN_SECONDS: Final = 3
"""... in at least this many different seconds of it (sustained, not one hiccup); or when
its next sample has been due for this long (a backlog so deep that it is seldom taken):"""
BEHIND_OVERDUE_S: Final = 2.0


def default_workers(threads_per_worker: int = 1) -> int:
    """The pipeline's worker threads by default: the cores this process may use, shared
    with each worker's inference threads (the analyzer's ``threads``, 1 by default)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, threads_per_worker))


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


class AnalyzerLike(Protocol):
    """What the pipeline needs of an analyzer: in-process ONNX sessions
    (:class:`~upr_faces_engine.analyzer.Analyzer`) or a remote service."""

    def detect(self, image: ImageArray) -> list[Detection]:
        """The faces of one BGR image."""

    def embed(self, image: ImageArray, detections: Sequence[Detection]) -> FloatArray:
        """One L2-normalised embedding row per detection of one image."""

    def detect_batch(self, images: Sequence[ImageArray]) -> list[list[Detection]]:
        """The faces of each image, in order."""

    def embed_batch(
        self, items: Sequence[tuple[ImageArray, Sequence[Detection]]]
    ) -> list[FloatArray]:
        """One ``(n_i, dim)`` array of embeddings per (image, detections) item."""


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
    still_after_s: float = 3.0  # a scene still this long is told to the source (set_still)


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
    analysed_fps: float = 0.0  # frames through the detector per second, last 5 s
    dropped_recent: int = 0  # samples dropped in the last 5 s (the analyzer was busy)
    behind: bool = False  # samples dropped for a few seconds: the analyzer cannot keep up
    still: bool = False  # the scene has been still for still_after_s (told to the source)


@dataclass(frozen=True, slots=True)
class PipelineStats:
    """A snapshot of the scheduler: how much it has, and whether it keeps up."""

    workers: int
    max_batch: int
    cameras: int
    cameras_behind: int
    overloaded: bool  # some camera is behind: the analyzer cannot keep up with them all
    mean_batch: float | None  # frames per detector batch, recent mean


@dataclass(slots=True)
class FrameWork:
    """One frame of one camera on its way through the models (see :meth:`CameraWorker.prepare`)."""

    frame: FrameLike
    image: ImageArray
    now: float
    detections: list[Detection] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    to_embed: list[tuple[int, float, ThumbArray | None]] = field(default_factory=list)

    @property
    def embed_detections(self) -> list[Detection]:
        """The detections whose faces are to be embedded (set by ``plan``)."""
        return [self.detections[index] for index, _q, _t in self.to_embed]


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
        self._added_at = time.monotonic()
        self.scheduled = False  # visited by a running pipeline's workers (not process() alone)
        self._very_late_at: float | None = None
        # recent history, bounded: when frames were analysed, when samples were dropped
        self._analysed_at: deque[float] = deque(maxlen=1024)
        self._dropped_at: deque[tuple[float, int]] = deque(maxlen=256)
        self._still_since: float | None = None
        self._still = False
        self._still_hook_failed = False

    def note_dropped(self, count: int, now: float, late: float = 0.0) -> None:
        """``count`` samples were skipped: the camera was due while the workers were busy
        (its frame was taken ``late`` seconds after it was due)."""
        self.dropped += count
        self._dropped_at.append((now, count))
        if late >= BEHIND_OVERDUE_S:
            self._very_late_at = now

    def analysed_fps(self, now: float | None = None) -> float:
        """Frames through the detector per second over the last few seconds."""
        now = time.monotonic() if now is None else now
        span = min(STATS_WINDOW_S, now - self._added_at)
        if span <= 0.5:
            return 0.0
        recent = sum(1 for at in self._analysed_at if at >= now - span)
        return round(recent / span, 2)

    def _recent_drops(self, now: float) -> tuple[int, int]:
        """Samples dropped in the window, and in how many different seconds of it."""
        start = now - STATS_WINDOW_S
        recent = [(at, count) for at, count in self._dropped_at if at >= start]
        return sum(count for _at, count in recent), len({int(now - at) for at, _c in recent})

    def is_behind(self, now: float | None = None) -> bool:
        """Whether the analyzer has not kept up with this camera for a few seconds:
        more than a tenth of its samples dropped, in three seconds or more of the last 5 s,
        or a sample taken 2 s or more after it was due, in the last 5 s or now (a camera
        without new frames is not due)."""
        now = time.monotonic() if now is None else now
        if self.scheduled and now - self.next_due >= BEHIND_OVERDUE_S:
            return True
        if self._very_late_at is not None and now - self._very_late_at <= STATS_WINDOW_S:
            return True
        dropped, seconds = self._recent_drops(now)
        due = STATS_WINDOW_S * self.config.detection_fps
        return seconds >= BEHIND_MIN_SECONDS and dropped > BEHIND_MIN_SHARE * due

    @property
    def still(self) -> bool:
        """Whether the scene has been still (no motion, no face followed) for a while."""
        return self._still

    def stats(self) -> CameraStats:
        """A snapshot of the counters."""
        detect = round(sum(self._detect_ms) / len(self._detect_ms), 2) if self._detect_ms else None
        now = time.monotonic()
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
            analysed_fps=self.analysed_fps(now),
            dropped_recent=self._recent_drops(now)[0],
            behind=self.is_behind(now),
            still=self._still,
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
        changed = (
            reference is None
            or float(np.abs(grey - reference).mean()) >= self.config.motion_threshold
        )
        self._note_stillness(changed, now)
        moved = changed or forced or bool(self.tracker.active)
        if moved:
            self._reference_thumb = grey
            self._last_full_check = now
        return moved

    def _note_stillness(self, changed: bool, now: float) -> None:
        """Track how long the scene has been still; tell the source when that changes."""
        if changed or self.tracker.active:
            self._still_since = None
            self._set_still(False)
        elif self._still_since is None:
            self._still_since = now
        elif now - self._still_since >= self.config.still_after_s:
            self._set_still(True)

    def _set_still(self, still: bool) -> None:
        """Tell the source (once per change) whether its scene is still, if it cares."""
        if still == self._still:
            return
        self._still = still
        hook = getattr(self.source, "set_still", None)
        if hook is None:
            return
        try:
            hook(still)
        except Exception:
            if not self._still_hook_failed:
                _LOGGER.exception(
                    "Camera %s: telling the source its scene is still failed", self.camera
                )
                self._still_hook_failed = True

    def process(
        self, frame: FrameLike, analyzer: AnalyzerLike, gallery: Gallery | None
    ) -> list[MatchEvent]:
        """Analyse one frame: detect, track, embed the best frames, match, decide alerts.

        The pipeline does the same for several cameras at once: :meth:`prepare` each,
        one ``detect_batch``, :meth:`plan` each, one ``embed_batch``, :meth:`finish` each.
        """
        work = self.prepare(frame)
        if work is None:
            return []
        started = time.perf_counter()
        detections = analyzer.detect(work.image)
        detect_ms = (time.perf_counter() - started) * 1000.0
        wanted = self.plan(work, detections, gallery, detect_ms)
        vectors = analyzer.embed(work.image, wanted) if wanted else None
        return self.finish(work, vectors, gallery)

    def prepare(self, frame: FrameLike) -> FrameWork | None:
        """The motion gate: the frame's work, or None when the scene is unchanged (gated)."""
        image = frame.image
        now = time.monotonic()
        if not self._motion(image, now):
            self.gated += 1
            return None
        return FrameWork(frame, image, now)

    def plan(
        self,
        work: FrameWork,
        detections: list[Detection],
        gallery: Gallery | None,
        detect_ms: float,
    ) -> list[Detection]:
        """Track the frame's faces; returns those worth embedding (maybe none)."""
        image, frame = work.image, work.frame
        self._detect_ms.append(detect_ms)
        self.frames_analysed += 1
        self._analysed_at.append(work.now)
        if detections:
            self.last_detection_at = time.time()
        work.detections = detections
        work.tracks = tracks = self.tracker.update(detections, frame.captured_at)
        if gallery is not None and gallery.reference_count:
            for index, (track, detection) in enumerate(zip(tracks, detections, strict=True)):
                quality = face_quality(image, detection, self.config.tracker.min_face_size)
                thumb = face_thumbnail(image, detection)
                pending = self.tracker.pending(track, self.thresholds)
                if self.tracker.wants_embedding(
                    track, quality, thumb, frame.captured_at, pending=pending
                ):
                    work.to_embed.append((index, quality, thumb))
        return work.embed_detections

    def finish(
        self, work: FrameWork, vectors: FloatArray | None, gallery: Gallery | None
    ) -> list[MatchEvent]:
        """Match the embedded faces (``vectors``: one row per :meth:`plan` detection),
        decide the alerts, update the live view."""
        image, frame, now = work.image, work.frame, work.now
        detections, tracks, to_embed = work.detections, work.tracks, work.to_embed
        events: list[MatchEvent] = []
        if to_embed and gallery is not None and vectors is not None:
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
        if self.tracker.active:  # a face is followed: the scene is not still
            self._still_since = None
            self._set_still(False)
        self.cooldown.forget(now)
        self.events += len(events)
        return events

    def analysis_succeeded(self) -> None:
        """The camera's last frame went through: log once that it is analysed again."""
        if self._failing:
            _LOGGER.info("Camera %s is analysed again", self.camera)
            self._failing = False

    def analysis_failed(self, err: BaseException) -> None:
        """Analysing the camera's frame failed: count it, log it once until it recovers."""
        self.analysis_errors += 1
        self.analysis_error = f"{type(err).__name__}: {err}"[:300]
        if not self._failing:
            _LOGGER.error("Analysing a frame of camera %s failed", self.camera, exc_info=err)
            self._failing = True

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
    """Runs every camera through one shared analyzer on a few worker threads.

    ``workers``: the worker threads; None for the cores over the analyzer's inference
    threads per session (:func:`default_workers`): one per core with the default analyzer.
    ``max_batch``: the most cameras one worker takes at once; their frames go through the
    analyzer's ``detect_batch`` and ``embed_batch`` together.
    """

    def __init__(
        self,
        analyzer: AnalyzerLike,
        gallery: Gallery | None = None,
        config: PipelineConfig | None = None,
        *,
        workers: int | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.analyzer = analyzer
        self.config = config or PipelineConfig()
        self._gallery = gallery
        self._cameras: dict[str, CameraWorker] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        if workers is None:
            session_threads = getattr(analyzer, "threads", None)
            workers = default_workers(session_threads if isinstance(session_threads, int) else 1)
        self._workers = max(1, workers)
        self.max_batch = max(1, max_batch)
        self._processing = 0  # workers busy with a batch (under the lock)
        self._batch_sizes: deque[int] = deque(maxlen=100)
        self._overloaded = False
        self._overload_checked = 0.0
        self._listeners: list[EventListener] = []
        self.rejections = Rejections()

    @property
    def workers(self) -> int:
        """The number of worker threads."""
        return self._workers

    @property
    def overloaded(self) -> bool:
        """Whether some camera is behind: the analyzer cannot keep up with every camera."""
        now = time.monotonic()
        return any(worker.is_behind(now) for worker in list(self._cameras.values()))

    def stats(self) -> PipelineStats:
        """A snapshot of the scheduler's figures."""
        now = time.monotonic()
        cameras = list(self._cameras.values())
        behind = sum(1 for worker in cameras if worker.is_behind(now))
        sizes = list(self._batch_sizes)
        return PipelineStats(
            workers=self._workers,
            max_batch=self.max_batch,
            cameras=len(cameras),
            cameras_behind=behind,
            overloaded=behind > 0,
            mean_batch=round(sum(sizes) / len(sizes), 2) if sizes else None,
        )

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
            worker.scheduled = bool(self._threads)
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
        with self._lock:
            now = time.monotonic()
            for worker in self._cameras.values():  # waiting for the start is not being late
                worker.next_due = max(worker.next_due, now)
                worker.scheduled = True
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
        for worker in list(self._cameras.values()):
            worker.scheduled = False
        for camera in list(self._cameras):
            self.remove_camera(camera, timeout)

    def _next_due(self) -> list[tuple[CameraWorker, FrameLike]] | float:
        """The cameras to process now with their newest frames (oldest due first, at most
        ``max_batch``, shared with the other idle workers), or how long to wait."""
        now = time.monotonic()
        wait = 0.1
        due: list[tuple[CameraWorker, FrameLike]] = []
        for worker in self._cameras.values():
            if worker.busy:
                continue
            if worker.next_due > now:
                wait = min(wait, worker.next_due - now)
                continue
            frame = worker.source.latest()
            if frame is None or frame.seq == worker.last_seq:
                # no new frame yet: not the analyzer's fault, so not a dropped sample;
                # the camera is due again as soon as one comes
                worker.next_due = now
                wait = min(wait, 0.01)
                continue
            due.append((worker, frame))
        if not due:
            return wait
        due.sort(key=lambda pick: pick[0].next_due)  # oldest due first: none starves
        idle = max(1, self._workers - self._processing)
        chosen = due[: min(self.max_batch, math.ceil(len(due) / idle))]
        for worker, frame in chosen:
            late = now - worker.next_due
            if late > worker.interval:
                missed = int(late // worker.interval)
                worker.note_dropped(missed, now, late)
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
                self._processing += 1
            results: list[tuple[CameraWorker, list[MatchEvent]]] = []
            try:
                results = self.process_batch(picked)
            finally:
                with self._lock:
                    self._processing -= 1
                    for worker, _frame in picked:
                        worker.busy = False
                    self._lock.notify_all()
            for _worker, events in results:
                for event in events:
                    for listener in list(self._listeners):
                        try:
                            listener(event)
                        except Exception:
                            _LOGGER.exception("A match listener failed")
            self._check_overload()

    def process_batch(
        self, picked: Sequence[tuple[CameraWorker, FrameLike]]
    ) -> list[tuple[CameraWorker, list[MatchEvent]]]:
        """Several cameras' frames through the models together: the motion gate of each,
        one ``detect_batch`` for the frames it lets through, one ``embed_batch`` for all the
        faces to embed, then each camera's tracks, matches and alerts. A failure is the
        failure of the cameras it concerns only."""
        analyzer, gallery = self.analyzer, self._gallery
        works: list[tuple[CameraWorker, FrameWork]] = []
        for worker, frame in picked:
            try:
                work = worker.prepare(frame)
            except Exception as err:
                worker.analysis_failed(err)
                continue
            if work is None:
                worker.analysis_succeeded()
            else:
                works.append((worker, work))
        if not works:
            return []
        self._batch_sizes.append(len(works))
        started = time.perf_counter()
        try:
            found = analyzer.detect_batch([work.image for _worker, work in works])
            if len(found) != len(works):
                raise ValueError(f"{len(found)} detection lists for {len(works)} frames")
        except Exception as err:
            for worker, _work in works:
                worker.analysis_failed(err)
            return []
        detect_ms = (time.perf_counter() - started) * 1000.0 / len(works)
        planned: list[tuple[CameraWorker, FrameWork, list[Detection]]] = []
        for (worker, work), detections in zip(works, found, strict=True):
            try:
                planned.append((worker, work, worker.plan(work, detections, gallery, detect_ms)))
            except Exception as err:
                worker.analysis_failed(err)
        wanting = [(worker, work, wanted) for worker, work, wanted in planned if wanted]
        vectors: dict[int, FloatArray] = {}
        if wanting:
            try:
                rows = analyzer.embed_batch([(work.image, wanted) for _w, work, wanted in wanting])
                if len(rows) != len(wanting):
                    raise ValueError(f"{len(rows)} embedding sets for {len(wanting)} frames")
                vectors = {id(work): row for (_w, work, _d), row in zip(wanting, rows, strict=True)}
            except Exception as err:
                for worker, _work, _wanted in wanting:
                    worker.analysis_failed(err)
                failed = {id(work) for _w, work, _d in wanting}
                planned = [item for item in planned if id(item[1]) not in failed]
        results: list[tuple[CameraWorker, list[MatchEvent]]] = []
        for worker, work, _wanted in planned:
            try:
                results.append((worker, worker.finish(work, vectors.get(id(work)), gallery)))
            except Exception as err:
                worker.analysis_failed(err)
                continue
            worker.analysis_succeeded()
        return results

    def _check_overload(self) -> None:
        """Log once when the analyzer stops keeping up, and once when it catches up."""
        now = time.monotonic()
        if now - self._overload_checked < 1.0:
            return
        self._overload_checked = now
        behind = [worker.camera for worker in list(self._cameras.values()) if worker.is_behind(now)]
        if behind and not self._overloaded:
            _LOGGER.warning(
                "The analyzer cannot keep up: %d of %d cameras drop samples (%s); lower the "
                "detection rate, add cores or move the analysis elsewhere",
                len(behind),
                len(self._cameras),
                ", ".join(behind[:8]),
            )
        elif not behind and self._overloaded:
            _LOGGER.info("The analyzer keeps up with every camera again")
        self._overloaded = bool(behind)

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
