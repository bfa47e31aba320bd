"""Shared fixtures: paths to the shared models and photos, skipped with a reason when absent."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TEST_PACK = SHARED / "models" / "test_pack"
FACES = SHARED / "faces"


@dataclass(frozen=True)
class LabelledPhoto:
    """One row of ../shared/faces/labels.csv."""

    path: Path
    identity: str
    faces: int


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared models and photos live beside the project")
    return path


@pytest.fixture(scope="session")
def test_pack() -> Path:
    """The shared SCRFD-500M + 128-d recognizer pack."""
    return _require(TEST_PACK)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The shared labelled photos."""
    return _require(FACES)


@pytest.fixture(scope="session")
def labelled_photos(faces_dir: Path) -> list[LabelledPhoto]:
    """Every labelled photo with its identity and expected face count."""
    with (faces_dir / "labels.csv").open(newline="") as handle:
        return [
            LabelledPhoto(faces_dir / row["file"], row["identity"], int(row["faces"]))
            for row in csv.DictReader(handle)
        ]


def gallery_photos(labelled_photos: list[LabelledPhoto]) -> dict[str, list[Path]]:
    """Every deepface person's photos except the first one (which the cameras show)."""
    photos: dict[str, list[Path]] = {}
    seen: set[str] = set()
    for photo in labelled_photos:
        if not photo.identity.startswith("deepface_"):
            continue
        if photo.identity not in seen:
            seen.add(photo.identity)
            continue
        photos.setdefault(photo.identity, []).append(photo.path)
    return photos


def make_gallery(folder: Path, labelled_photos: list[LabelledPhoto]) -> Path:
    """A gallery folder with persons A to F (all photos but the first of each): ``folder``."""
    for person_id, paths in gallery_photos(labelled_photos).items():
        (folder / person_id).mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copy(path, folder / person_id)
    return folder
