"""Follow faces across frames, pick the frames worth embedding, and weigh what they say.

A track is a face seen in consecutive analysed frames (matched by box overlap). Embedding
is the expensive step after detection, so a track is embedded only when it is worth it:
while its identity is new, on its first usable frame, on clearly better ones and on those a
pending decision needs (at most ``max_embeddings`` of them); then again at least every
``recheck_s`` of captured time, and when the face looks different from the last time it was
embedded (its thumbnail or its box changed), at most once every ``change_min_frames``
analysed frames. An embedding unlike the track's earlier ones means another person took the
face's place: the track is split, and the new face is followed as a track of its own.

Who a track is, is decided on the evidence of its newest embeddings, never on one frame
alone unless that frame leaves no doubt: see :meth:`Tracker.verdict`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from .detector import Detection
from .gallery import Thresholds, Tier

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]
ThumbArray = npt.NDArray[np.int16]

TIER_RANK: dict[Tier, int] = {"none": 0, "probable": 1, "match": 2}
THUMB_SIDE = 16


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """How faces are followed and when they are embedded."""

    iou_threshold: float = 0.3
    # a track not seen for this long ends (the pipeline raises it to 3 detection intervals)
    max_age_s: float = 0.6
    # a new embedding this far from the track's earlier ones means another person took the
    # place of the first: the track is split, the new face gets a track of its own
    same_person_min_cosine: float = 0.25
    min_face_size: int = 40
    # embeddings while an identity is new: its first usable frame, frames better by
    # ``improvement``, and frames a pending decision needs
    max_embeddings: int = 3
    improvement: float = 1.15
    # then again at least this often (captured time) while the track lives ...
    recheck_s: float = 2.0
    # ... and when the face changed since it was last embedded: the mean absolute difference
    # of its grey 16x16 thumbnails (0-255: a still face on a camera stays under 7, another
    # person's face in its place is over 25), or a box overlapping the one it had then by
    # less than ``change_max_iou``; such a change is embedded at most once every
    # ``change_min_frames`` analysed frames of the track
    change_min_diff: float = 12.0
    change_max_iou: float = 0.5
    change_min_frames: int = 2
    # the evidence a decision weighs: the identity's newest embeddings (and no more are kept)
    evidence_window: int = 5
    # agreeing embeddings needed, each weighing quality / full_weight_quality (at most 1:
    # a large, sharp, frontal face counts fully, a small or blurred one for less) ...
    min_support: float = 2.0
    full_weight_quality: float = 0.8
    # ... unless one of them is this far above the tier
    decisive_margin: float = 0.10
    # an embedding whose two nearest persons are closer than this supports neither
    tie_margin: float = 0.03


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


def face_thumbnail(image: ImageArray, detection: Detection) -> ThumbArray | None:
    """The face's box in grey, shrunk to 16x16: enough to tell that a face changed (another
    person took its place) for the price of a resize. ``None`` for an empty box."""
    x1, y1, x2, y2 = (round(float(v)) for v in detection.box)
    height, width = image.shape[:2]
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(width, x2), min(height, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    grey = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)
    thumb: ThumbArray = small.astype(np.int16)
    return thumb


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
class Evidence:
    """What one embedding of a track said: its similarity to its nearest persons, and how
    much it weighs (by the quality of the face it was taken from)."""

    similarity: dict[str, float]
    weight: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """Who a track's evidence names, at which tier, with the best agreeing similarity."""

    person_id: str
    similarity: float
    tier: Tier


@dataclass(slots=True)
class Track:
    """One face followed across frames, and what is known of who it is."""

    track_id: int
    detection: Detection
    first_captured_at: float
    last_seen_at: float
    hits: int = 1
    # the newest embeddings (at most ``evidence_window``) and what each said
    embeddings: list[FloatArray] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    best_quality: float = 0.0
    # best similarity seen so far per person
    similarity: dict[str, float] = field(default_factory=dict)
    # embeddings taken since the identity began; the last one's time, hits, box and look
    embedded: int = 0
    embedded_at: float = 0.0
    embedded_hits: int = 0
    embedded_box: FloatArray | None = None
    embedded_thumb: ThumbArray | None = None
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

    def wants_embedding(
        self,
        track: Track,
        quality: float,
        thumb: ThumbArray | None = None,
        captured_at: float | None = None,
        *,
        pending: bool = False,
    ) -> bool:
        """Whether this frame of the track is worth embedding.

        ``pending``: the track's newest embedding resembles someone at a tier its evidence
        has not confirmed yet (see :meth:`pending`).
        """
        config = self.config
        if quality <= 0.0:
            return False
        if not track.embeddings:
            return True
        if track.embedded < config.max_embeddings and (
            pending or quality >= track.best_quality * config.improvement
        ):
            return True
        at = track.last_seen_at if captured_at is None else captured_at
        if at - track.embedded_at >= config.recheck_s:
            return True
        if track.hits - track.embedded_hits < config.change_min_frames:
            return False
        return self._changed(track, thumb)

    def _changed(self, track: Track, thumb: ThumbArray | None) -> bool:
        """Whether the face looks different from when the track was last embedded."""
        if thumb is not None and track.embedded_thumb is not None:
            difference = float(np.abs(thumb - track.embedded_thumb).mean())
            if difference >= self.config.change_min_diff:
                return True
        if track.embedded_box is not None:
            overlap = iou_matrix(track.embedded_box[None, :], track.detection.box[None, :])
            if float(overlap[0, 0]) < self.config.change_max_iou:
                return True
        return False

    def add_embedding(
        self,
        track: Track,
        vector: FloatArray,
        similarity: Mapping[str, float] | None = None,
        *,
        quality: float = 0.0,
        thumb: ThumbArray | None = None,
        captured_at: float | None = None,
    ) -> Track:
        """Keep a new embedding of the track and the gallery's ``similarity`` to it (per
        person); returns the track that holds the face from now on.

        When the face no longer resembles the track's earlier embeddings, another person
        took its place: the track ends, and a new one (a new id, and similarities,
        announcements and rejections of its own, first seen now) takes the detection.
        """
        at = track.last_seen_at if captured_at is None else captured_at
        if track.embeddings:
            mean = np.mean(track.embeddings, axis=0)
            norm = float(np.linalg.norm(mean)) or 1.0
            if float(vector @ mean) / norm < self.config.same_person_min_cosine:
                self.tracks.pop(track.track_id, None)
                track = Track(next(self._ids), track.detection, at, track.last_seen_at)
                self.tracks[track.track_id] = track
        window = max(1, self.config.evidence_window)
        full = self.config.full_weight_quality
        weight = min(1.0, quality / full) if full > 0 else 1.0
        track.embeddings.append(vector)
        track.evidence.append(Evidence(dict(similarity or {}), weight))
        del track.embeddings[:-window]
        del track.evidence[:-window]
        for person_id, value in (similarity or {}).items():
            track.similarity[person_id] = max(track.similarity.get(person_id, -1.0), value)
        track.embedded += 1
        track.best_quality = max(track.best_quality, quality)
        track.embedded_at = at
        track.embedded_hits = track.hits
        track.embedded_box = np.asarray(track.detection.box, dtype=np.float32).copy()
        track.embedded_thumb = thumb
        return track

    def _supports(self, track: Track, evidence: Evidence) -> tuple[str, float] | None:
        """The person one embedding supports: the nearest one not rejected for the track,
        unless another comes within ``tie_margin`` of it."""
        ranked = sorted(
            (
                (value, pid)
                for pid, value in evidence.similarity.items()
                if pid not in track.rejected
            ),
            reverse=True,
        )
        if not ranked:
            return None
        if len(ranked) > 1 and ranked[0][0] - ranked[1][0] < self.config.tie_margin:
            return None
        return ranked[0][1], ranked[0][0]

    def verdict(self, track: Track, thresholds: Thresholds) -> Verdict | None:
        """Who the track's evidence names, and at which tier; ``None`` while it names no one.

        An embedding supports the person it resembles most (persons rejected for the track
        left out) at a tier when its similarity reaches the tier and no other person comes
        within ``tie_margin``. A person reaches a tier when the newest embedding supports
        them at that tier, and either one supporting embedding of the window is
        ``decisive_margin`` above the tier, or the supporting ones together weigh
        ``min_support`` (each ``quality / full_weight_quality``, at most 1).
        """
        config = self.config
        window = track.evidence[-max(1, config.evidence_window) :]
        if not window:
            return None
        newest = self._supports(track, window[-1])
        if newest is None:
            return None
        person_id, newest_similarity = newest
        supports = [(self._supports(track, item), item.weight) for item in window]
        levels: tuple[tuple[Tier, float], ...] = (
            ("match", thresholds.match),
            ("probable", thresholds.probable),
        )
        for tier, threshold in levels:
            if newest_similarity < threshold:
                continue
            agreeing = [
                (found[1], weight)
                for found, weight in supports
                if found is not None and found[0] == person_id and found[1] >= threshold
            ]
            best = max(value for value, _weight in agreeing)
            weight = sum(weight for _value, weight in agreeing)
            if best >= threshold + config.decisive_margin or weight >= config.min_support - 1e-6:
                return Verdict(person_id, best, tier)
        return None

    def pending(self, track: Track, thresholds: Thresholds) -> bool:
        """Whether the newest embedding resembles someone at a tier the evidence has not
        confirmed yet: one more embedding may decide it."""
        if not track.evidence:
            return False
        values = [
            value
            for pid, value in track.evidence[-1].similarity.items()
            if pid not in track.rejected
        ]
        if not values or max(values) < thresholds.probable:
            return False
        verdict = self.verdict(track, thresholds)
        reached: Tier = verdict.tier if verdict is not None else "none"
        return TIER_RANK[thresholds.tier(max(values))] > TIER_RANK[reached]

    @property
    def active(self) -> int:
        """Number of faces currently followed."""
        return len(self.tracks)
