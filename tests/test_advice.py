"""Thresholds that learn from verdicts (``advice.py``), against hand computations."""

from __future__ import annotations

from typing import Any

from upr_faces_engine.advice import (
    MIN_DECISIONS,
    Decision,
    advise,
    decisions,
    false_share,
)


def _history() -> list[Decision]:
    """40 decisions: 10 rejected from 0.560 to 0.596, 30 confirmed from 0.58 to 0.87."""
    rejected = [Decision(round(0.56 + 0.004 * i, 4), False) for i in range(10)]
    confirmed = [Decision(round(0.58 + 0.01 * i, 4), True) for i in range(30)]
    return rejected + confirmed


def test_the_advice_matches_a_hand_computation() -> None:
    history = _history()
    advice = advise(history, 0.55)
    # at 0.55 every decision counts: 10 of 40 were the wrong person
    assert advice["false_share"] == 0.25
    assert (advice["decisions"], advice["rejected"]) == (40, 10)
    # by hand: at 0.596 (the last rejection) 1 wrong among 0.596 and 0.60 .. 0.87 (28
    # confirmed): 1/29 = 0.034, within 1/20; any lower threshold keeps two rejections or
    # more among at most 32: 2/32 = 0.0625 and worse. So: 0.596.
    assert advice["advised"] == 0.596
    assert advice["differs"] is False  # 0.046 from the setting: no repair for that
    assert false_share(history, 0.596) == 1 / 29
    # the same history seen from a camera set at 0.45: the advice is far from it
    assert advise(history, 0.45)["differs"] is True
    # set at 0.70: nothing wrong above it (false share 0), the advice says it could be lower
    high = advise(history, 0.70)
    assert (high["false_share"], high["advised"], high["differs"]) == (0.0, 0.596, True)


def test_no_advice_below_the_minimum_count() -> None:
    history = _history()[: MIN_DECISIONS - 1]
    advice = advise(history, 0.55)
    assert advice["decisions"] == MIN_DECISIONS - 1
    assert advice["advised"] is None
    assert advice["differs"] is False
    assert advice["false_share"] is not None  # the share so far is still shown


def test_when_no_threshold_is_good_enough_the_advice_is_above_every_rejection() -> None:
    history = [Decision(0.6, False)] * 20 + [Decision(0.6, True)] * 10 + [Decision(0.9, False)]
    advice = advise(history, 0.55)
    assert advice["advised"] == 0.9001


def _incident(state: str, similarity: float, *seen: tuple[str, float]) -> dict[str, Any]:
    return {
        "state": state,
        "similarity": similarity,
        "camera_id": seen[0][0],
        "sightings": [{"camera_id": camera, "similarity": score} for camera, score in seen],
    }


def test_an_incident_counts_once_per_camera_by_its_best_sighting_there() -> None:
    records = [
        _incident("confirmed", 0.8, ("door", 0.6), ("hall", 0.8), ("door", 0.7)),
        _incident("rejected", 0.58, ("hall", 0.58)),
        _incident("pending", 0.9, ("door", 0.9)),  # undecided: not a decision
        _incident("closed", 0.9, ("door", 0.9)),  # closed by the registry: neither
        {"state": "rejected", "similarity": 0.5, "camera_id": "gate"},  # before incidents
    ]
    overall, by_camera = decisions(records)
    assert overall == [Decision(0.8, True), Decision(0.58, False), Decision(0.5, False)]
    assert by_camera == {
        "door": [Decision(0.7, True)],
        "hall": [Decision(0.8, True), Decision(0.58, False)],
        "gate": [Decision(0.5, False)],
    }
