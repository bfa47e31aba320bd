"""Detector, embedder and analyzer on the real models and photos, against InsightFace."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from upr_faces_engine.analyzer import (
    Analyzer,
    decode_image,
    read_image,
    resolve_providers,
)
from upr_faces_engine.detector import nms
from upr_faces_engine.embedder import ARCFACE_TEMPLATE, similarity_transform
from upr_faces_engine.errors import ImageError
from upr_faces_engine.models import find_pack

from .conftest import LabelledPhoto


@pytest.fixture(scope="module")
def analyzer(test_pack: Path) -> Analyzer:
    return Analyzer(find_pack(test_pack), threads=1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def test_parity_with_insightface(
    analyzer: Analyzer, test_pack: Path, labelled_photos: list[LabelledPhoto]
) -> None:
    """Boxes agree with InsightFace's SCRFD, embeddings with its ArcFaceONNX."""
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.scrfd import SCRFD
    from insightface.utils import face_align

    ref_det = SCRFD(str(test_pack / "det_500m.onnx"))
    ref_det.prepare(-1, input_size=(640, 640))
    ref_rec = ArcFaceONNX(str(test_pack / "mobilefacenet_128d.onnx"))
    compared = 0
    for photo in labelled_photos:
        image = read_image(photo.path)
        ours = analyzer.analyze(image)
        boxes, kpss = ref_det.detect(image, input_size=(640, 640))
        assert len(ours) == len(boxes), photo.path.name
        for face in ours:
            ious = [_iou(face.box, ref[:4]) for ref in boxes]
            best = int(np.argmax(ious))
            assert ious[best] >= 0.95, photo.path.name
            assert face.score == pytest.approx(float(boxes[best][4]), abs=1e-4)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                crop = face_align.norm_crop(image, kpss[best])
            ref_vec = ref_rec.get_feat(crop).ravel()
            ref_vec /= np.linalg.norm(ref_vec)
            assert face.embedding is not None
            assert float(face.embedding @ ref_vec) >= 0.999, photo.path.name
            compared += 1
    assert compared == 30  # 16 single faces + 2 + 6 + 6 in the group photos


def test_similarity_transform_matches_skimage() -> None:
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(3)
    for _ in range(20):
        src = ARCFACE_TEMPLATE * rng.uniform(0.5, 3) + rng.uniform(-50, 50, size=(1, 2))
        src = src + rng.normal(0, 2, size=src.shape)
        ref = SimilarityTransform.from_estimate(src, ARCFACE_TEMPLATE)
        ours = similarity_transform(src, ARCFACE_TEMPLATE)
        np.testing.assert_allclose(ours, ref.params[:2], atol=1e-4)


def test_face_counts(analyzer: Analyzer, labelled_photos: list[LabelledPhoto]) -> None:
    """Every photo gives its expected number of faces; 0 on the animals."""
    for photo in labelled_photos:
        data = photo.path.read_bytes()
        if photo.identity == "tom_hanks":
            # A pre-aligned 112x112 crop: no detection, but it embeds as it is.
            assert analyzer.detect(decode_image(data)) == []
            result = analyzer.embed_photo(data)
            assert result.embedding is not None
            assert result.faces == 1
            continue
        assert len(analyzer.detect(decode_image(data))) == photo.faces, photo.path.name


def test_embeddings_are_normalised_with_model_size(
    analyzer: Analyzer, labelled_photos: list[LabelledPhoto]
) -> None:
    group = next(p for p in labelled_photos if p.faces == 6)
    faces = analyzer.analyze(read_image(group.path))
    vectors = np.stack([f.embedding for f in faces if f.embedding is not None])
    assert vectors.shape == (6, 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for face in faces:
        assert face.landmarks.shape == (5, 2)
        # every landmark lies inside (or very near) its box
        x1, y1, x2, y2 = face.box
        width = x2 - x1
        assert np.all(face.landmarks[:, 0] > x1 - 0.2 * width)
        assert np.all(face.landmarks[:, 0] < x2 + 0.2 * width)


def test_leave_one_out_identification(
    analyzer: Analyzer, labelled_photos: list[LabelledPhoto]
) -> None:
    """The nearest other photo of every labelled face is of the same person."""
    singles = [p for p in labelled_photos if p.identity.startswith("deepface_")]
    vectors = []
    for photo in singles:
        result = analyzer.embed_photo(photo.path.read_bytes())
        assert result.embedding is not None
        vectors.append(result.embedding)
    matrix = np.stack(vectors)
    sims = matrix @ matrix.T
    np.fill_diagonal(sims, -2.0)
    identities = sorted({p.identity for p in singles})
    assert len(identities) == 6
    for i, photo in enumerate(singles):
        nearest = singles[int(np.argmax(sims[i]))]
        assert nearest.identity == photo.identity, photo.path.name


def test_boxes_in_original_coordinates_at_any_size(
    test_pack: Path, labelled_photos: list[LabelledPhoto]
) -> None:
    """At 320 and with aspect-preserving input the same faces come out, scaled back."""
    photo = next(p for p in labelled_photos if p.path.name == "multi_deepface_couple.jpg")
    image = read_image(photo.path)
    base = Analyzer(find_pack(test_pack), threads=1).detect(image)
    for det_size, square in ((320, True), (640, False), (480, False)):
        found = Analyzer(find_pack(test_pack), threads=1, det_size=det_size, square=square)
        faces = found.detect(image)
        assert len(faces) == len(base)
        for face in faces:
            assert max(_iou(face.box, b.box) for b in base) > 0.8
    # an upscaled copy gives boxes scaled by the same factor
    import cv2

    big = cv2.resize(image, None, fx=2.0, fy=2.0)
    scaled = Analyzer(find_pack(test_pack), threads=1).detect(big)
    for face in scaled:
        assert max(_iou(face.box / 2.0, b.box) for b in base) > 0.85


def test_nms_suppresses_overlaps() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], dtype=np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95], dtype=np.float32)
    assert nms(boxes, scores, 0.4) == [3, 2]


def test_bad_images_raise(analyzer: Analyzer, tmp_path: Path) -> None:
    with pytest.raises(ImageError):
        decode_image(b"")
    with pytest.raises(ImageError):
        decode_image(b"GIF89a not really")
    with pytest.raises(ImageError):
        read_image(tmp_path / "absent.jpg")
    assert analyzer.embed_photo(b"\x00" * 100).reason == "not_an_image"
    # a decompression bomb is refused by its header, before decoding
    from .upr_server import decompression_bomb

    with pytest.raises(ImageError, match="too many pixels"):
        decode_image(decompression_bomb())


def test_unavailable_provider_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_providers(["cuda"]) == ("CPUExecutionProvider",)
    assert "not available" in caplog.text
    assert resolve_providers(["cpu"]) == ("CPUExecutionProvider",)


def test_sessions_are_shared(test_pack: Path) -> None:
    first = Analyzer(find_pack(test_pack), threads=1)
    second = Analyzer(find_pack(test_pack), threads=1, det_size=320)
    assert first.embedder._session is second.embedder._session
    assert first.detector._session is second.detector._session
