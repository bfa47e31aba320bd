"""Follow faces across frames and pick the frames worth embedding.

A track is a face seen in consecutive analysed frames (matched by box overlap). Embedding
is the expensive step after detection, so each track is embedded only on its best frames:
the first one that is good enough, then only clearly better ones, at most
``max_embeddings`` while it stays in view.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from .detector import Detection
from .gallery import Tier

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """How faces are followed and when they are embedded."""

    iou_threshold: float = 0.3
    # a track not seen for this long ends (the pipeline raises it to 3 detection intervals)
    max_age_s: float = 0.6
    # a new embedding this far from the track's earlier ones means another person took the
    # place of the first: the track starts its identity afresh
    same_person_min_cosine: float = 0.25
    min_face_size: int = 40
    max_embeddings: int = 3
    improvement: float = 1.15


def face_quality(image: ImageArray, detection: Detection, min_face_size: int) -> float:
    """A score in [0, 1]: size, sharpness and frontality of a detected face.

    0 means unusable (too small or outside the image). Sharpness is the variance of the
    Laplacian of the face crop; frontality compares the nose to the eyes' and mouth's midline.
    """
    x1, y1, x2, y2 = (round(float(v)) for v in detection.box)
    height, width = image.shape[:2]
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(width, x2), min(height, y2)
    side = min(x2 - x1, y2 - y1)
    if side < min_face_size:
        return 0.0
    crop = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    if grey.shape[0] > 96:
        grey = cv2.resize(grey, (96, 96), interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    sharp_score = min(1.0, sharpness / 300.0)
    lm = detection.landmarks
    eye_mid = (lm[0] + lm[1]) / 2.0
    mouth_mid = (lm[3] + lm[4]) / 2.0
    eye_dist = float(np.linalg.norm(lm[1] - lm[0])) or 1.0
    axis_x = (eye_mid[0] + mouth_mid[0]) / 2.0
    yaw = abs(float(lm[2][0]) - float(axis_x)) / eye_dist
    frontal_score = max(0.0, 1.0 - 2.0 * yaw)
    size_score = min(1.0, side / 112.0)
    return float(0.4 * size_score + 0.3 * sharp_score + 0.3 * frontal_score) * min(
        1.0, detection.score / 0.6
    )


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Intersection over union of every box of ``a`` with every box of ``b``."""
    if a.size == 0 or b.size == 0:
        return np.zeros((a.shape[0], b.shape[0]), dtype=np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    result: FloatArray = (inter / np.maximum(union, 1e-6)).astype(np.float32)
    return result


@dataclass(slots=True)
class Track:
    """One face followed across frames, and what is known of who it is."""

    track_id: int
    detection: Detection
    first_captured_at: float
    last_seen_at: float
    hits: int = 1
    embeddings: list[FloatArray] = field(default_factory=list)
    best_quality: float = 0.0
    # best similarity seen so far per person
    similarity: dict[str, float] = field(default_factory=dict)
    # tiers already announced per person (a probable may be upgraded to a match)
    announced: dict[str, Tier] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)

    @property
    def best(self) -> tuple[str, float] | None:
        """The person this face resembles most, with the similarity."""
        if not self.similarity:
            return None
        person = max(self.similarity, key=lambda pid: self.similarity[pid])
        return person, self.similarity[person]


class Tracker:
    """Associates detections of successive frames of one camera into tracks."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.tracks: dict[int, Track] = {}
        # ids unique for good, not per run: a rejection names a track by its id, and a
        # tracker made after a reload must not give an old id to a new face
        self._ids = itertools.count(time.time_ns() // 1_000)

    def update(self, detections: list[Detection], captured_at: float) -> list[Track]:
        """Assign the detections of a frame to tracks; returns the track of each detection."""
        for track_id in [
            tid
            for tid, track in self.tracks.items()
            if captured_at - track.last_seen_at > self.config.max_age_s
        ]:
            del self.tracks[track_id]
        live = list(self.tracks.values())
        assigned: list[Track | None] = [None] * len(detections)
        if live and detections:
            ious = iou_matrix(
                np.stack([t.detection.box for t in live]), np.stack([d.box for d in detections])
            )
            while True:
                ti, di = np.unravel_index(int(np.argmax(ious)), ious.shape)
                if ious[ti, di] < self.config.iou_threshold:
                    break
                track = live[int(ti)]
                track.detection = detections[int(di)]
                track.last_seen_at = captured_at
                track.hits += 1
                assigned[int(di)] = track
                ious[ti, :] = -1.0
                ious[:, di] = -1.0
        for index, detection in enumerate(detections):
            if assigned[index] is None:
                track = Track(next(self._ids), detection, captured_at, captured_at)
                self.tracks[track.track_id] = track
                assigned[index] = track
        return [track for track in assigned if track is not None]

    def add_embedding(self, track: Track, vector: FloatArray) -> bool:
        """Keep a new embedding of the track; returns False if it is another person.

        When the face no longer resembles the track's earlier embeddings, what the track
        knew (similarities, announcements, rejections) is dropped and it starts afresh.
        """
        same = True
        if track.embeddings:
            mean = np.mean(track.embeddings, axis=0)
            norm = float(np.linalg.norm(mean)) or 1.0
            if float(vector @ mean) / norm < self.config.same_person_min_cosine:
                same = False
                track.embeddings.clear()
                track.similarity.clear()
                track.announced.clear()
                track.rejected.clear()
                track.best_quality = 0.0
        track.embeddings.append(vector)
        return same

    def wants_embedding(self, track: Track, quality: float) -> bool:
        """Whether this frame of the track is worth embedding (and remember its quality)."""
        if quality <= 0.0 or len(track.embeddings) >= self.config.max_embeddings:
            return False
        if track.embeddings and quality < track.best_quality * self.config.improvement:
            return False
        track.best_quality = max(track.best_quality, quality)
        return True

    @property
    def active(self) -> int:
        """Number of faces currently followed."""
        return len(self.tracks)
