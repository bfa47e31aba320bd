"""Thresholds that learn from verdicts: what the operators' decisions say of a threshold.

Each decided incident (confirmed or rejected) is one *decision*, scored by its best
similarity: overall by the incident's best sighting, and for each camera it was seen on by
its best sighting there (an incident seen on three cameras counts once on each). Incidents
closed without a verdict count for nothing.

For a threshold ``t``, the false share is the part of the decisions scoring ``t`` or more
that operators rejected: what share of the alerts at ``t`` named the wrong person. The
advice is the lowest threshold whose false share is at most :data:`TARGET_FALSE_SHARE`
(1 in 20), found among the decided scores; when no threshold gets there, just above the
best rejected score. Below :data:`MIN_DECISIONS` decisions no advice is given (the count
is). Decisions only exist above the probable threshold, so the advice can say a threshold
lets too many wrong matches through, never how many right ones a higher one would lose:
it is advice, applied only by a person.

Pure functions; the engine feeds them its records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

TARGET_FALSE_SHARE: Final = 0.05
"""The share of wrong matches the advice keeps under (1 in 20)."""
MIN_DECISIONS: Final = 30
"""Decisions needed before any advice."""
ADVICE_MARGIN: Final = 0.05
"""How far the advice must be from the setting to be worth a repair issue."""
_STEP: Final = 0.0001  # similarities are kept to 4 decimals


@dataclass(frozen=True, slots=True)
class Decision:
    """One decided incident as seen where it is counted."""

    score: float
    confirmed: bool


def decisions(
    records: Iterable[dict[str, Any]],
) -> tuple[list[Decision], dict[str, list[Decision]]]:
    """(overall, by camera id) decisions of the decided incidents among ``records``."""
    overall: list[Decision] = []
    by_camera: dict[str, list[Decision]] = {}
    for record in records:
        state = record.get("state")
        if state not in ("confirmed", "rejected"):
            continue
        confirmed = state == "confirmed"
        overall.append(Decision(float(record.get("similarity") or 0.0), confirmed))
        best: dict[str, float] = {}
        for sighting in record.get("sightings") or (
            {"camera_id": record.get("camera_id"), "similarity": record.get("similarity")},
        ):
            camera_id = str(sighting.get("camera_id") or "")
            score = float(sighting.get("similarity") or 0.0)
            best[camera_id] = max(score, best.get(camera_id, 0.0))
        for camera_id, score in best.items():
            by_camera.setdefault(camera_id, []).append(Decision(score, confirmed))
    return overall, by_camera


def false_share(decided: Sequence[Decision], threshold: float) -> float | None:
    """The share of the decisions at ``threshold`` or above that were rejected."""
    kept = [d for d in decided if d.score >= threshold]
    if not kept:
        return None
    return sum(1 for d in kept if not d.confirmed) / len(kept)


def advise(
    decided: Sequence[Decision],
    threshold: float,
    *,
    target: float = TARGET_FALSE_SHARE,
    minimum: int = MIN_DECISIONS,
) -> dict[str, Any]:
    """What the decisions say of the match ``threshold`` (see the module docstring):
    ``decisions``, ``rejected``, ``minimum``, ``target``, ``threshold``, ``false_share`` (at
    it, None when no decision reaches it), ``advised`` (None below the minimum), and
    ``differs`` (the advice is at least :data:`ADVICE_MARGIN` from the threshold)."""
    share = false_share(decided, threshold)
    result: dict[str, Any] = {
        "decisions": len(decided),
        "rejected": sum(1 for d in decided if not d.confirmed),
        "minimum": minimum,
        "target": target,
        "threshold": threshold,
        "false_share": None if share is None else round(share, 4),
        "advised": None,
        "differs": False,
    }
    if len(decided) < minimum:
        return result
    advised: float | None = None
    # from the top score down: the share of rejections among the decisions at or above
    # each distinct score; the lowest score whose share is within the target wins
    ordered = sorted(decided, key=lambda d: d.score, reverse=True)
    rejected = 0
    for kept, decision in enumerate(ordered, start=1):
        rejected += not decision.confirmed
        last_of_score = kept == len(ordered) or ordered[kept].score != decision.score
        if last_of_score and rejected / kept <= target:
            advised = decision.score
    if advised is None:  # every threshold lets too many through: above the worst
        advised = min(1.0, max(d.score for d in decided if not d.confirmed) + _STEP)
    result["advised"] = round(advised, 4)
    result["differs"] = abs(advised - threshold) >= ADVICE_MARGIN - 1e-9
    return result
