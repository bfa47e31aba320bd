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


# --------------------------------------------------------------------------------------
# Model variants: a detector exported with a fixed input, a recognizer that normalises
# its own input (MXNet-style). Both are built from the shared models with ``onnx``.
# --------------------------------------------------------------------------------------

DET = "det_500m.onnx"
REC = "mobilefacenet_128d.onnx"


def _fixed_detector(test_pack: Path, folder: Path, width: int, height: int) -> Path:
    """A pack whose SCRFD has the input ``[1, 3, height, width]`` fixed in its graph (its
    outputs' anchor counts fixed to match, as an exporter writes them)."""
    import shutil

    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(test_pack / DET))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, (1, 3, height, width), strict=True):
        dim.dim_value = size  # replaces the symbolic dim_param
    for output in model.graph.output:
        anchors = output.type.tensor_type.shape.dim[0]
        anchors.dim_value = anchors.dim_value * width * height // (640 * 640)
    onnx.checker.check_model(model)
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / DET))
    shutil.copyfile(test_pack / REC, folder / REC)
    return folder


def _pixel_recognizer(test_pack: Path, folder: Path) -> Path:
    """A pack whose recognizer takes raw 0..255 pixels: ``Sub(127.5)`` then ``Mul(1/127.5)``
    prepended on its input, named as MXNet's exporter names them."""
    import shutil

    onnx = pytest.importorskip("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    model = onnx.load(str(test_pack / REC))
    graph = model.graph
    original = graph.input[0].name
    graph.input[0].name = "pixels"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(127.5, dtype=np.float32), "mean"),
            numpy_helper.from_array(np.array(1 / 127.5, dtype=np.float32), "scale"),
        ]
    )
    nodes = [
        helper.make_node("Sub", ["pixels", "mean"], ["centred"], name="_minusscalar0"),
        helper.make_node("Mul", ["centred", "scale"], [original], name="_mulscalar0"),
        *graph.node,
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    folder.mkdir(parents=True)
    shutil.copyfile(test_pack / DET, folder / DET)
    onnx.save(model, str(folder / REC))
    return folder


def _test_images(faces_dir: Path) -> list[np.ndarray]:
    """Real photos at several sizes and shapes: as they are, halved, stretched to 16:9, and
    padded above and below into a portrait."""
    import cv2

    images = []
    for name in ("deepface_A_img2.jpg", "multi_deepface_couple.jpg"):
        image = read_image(faces_dir / name)
        height, width = image.shape[:2]
        images += [
            image,
            cv2.resize(image, (width // 2, height // 2)),
            cv2.resize(image, (1280, 720)),
            cv2.copyMakeBorder(image, height // 2, height // 2, 0, 0, cv2.BORDER_CONSTANT),
        ]
    return images


@pytest.mark.parametrize(("width", "height"), [(640, 640), (640, 480)])
def test_fixed_size_detector(
    test_pack: Path, tmp_path: Path, faces_dir: Path, width: int, height: int
) -> None:
    """A detector whose graph fixes its input always gets exactly that input, letterboxed,
    whatever det_size and square say; it finds the faces the dynamic original finds."""
    fixed = find_pack(_fixed_detector(test_pack, tmp_path / "fixed", width, height))
    assert fixed.detector_input_size == (width, height)
    reference = Analyzer(find_pack(test_pack), threads=1)
    keys = set()
    for det_size, square in ((320, True), (480, False), (640, True), (640, False)):
        analyzer = Analyzer(fixed, threads=1, det_size=det_size, square=square)
        keys.add(analyzer.photo_key)
        for image in _test_images(faces_dir):
            assert analyzer.detector.input_size_for(*image.shape[:2]) == (width, height)
            expected = reference.detect(image)
            found = analyzer.detect(image)
            assert len(found) == len(expected) > 0, (det_size, square, image.shape)
            for face in found:
                best = max(_iou(face.box, other.box) for other in expected)
                assert best > 0.9, (det_size, square, image.shape)
    # the settings that do not apply do not split the reference photo cache
    assert len(keys) == 1


def test_dynamic_detector_keeps_its_settings(test_pack: Path) -> None:
    """A detector with dynamic H and W still follows det_size and square."""
    pack = find_pack(test_pack)
    assert pack.detector_input_size is None
    assert Analyzer(pack, threads=1, det_size=320).detector.input_size_for(480, 640) == (320, 320)
    fit = Analyzer(pack, threads=1, det_size=320, square=False)
    assert fit.detector.input_size_for(480, 640) == (320, 256)
    assert Analyzer(pack, threads=1).photo_key != fit.photo_key


def test_recognizer_that_normalises_its_input(
    analyzer: Analyzer, test_pack: Path, tmp_path: Path, labelled_photos: list[LabelledPhoto]
) -> None:
    """A recognizer whose graph subtracts the mean and scales gets raw pixels: its
    embeddings equal the original's; the original is still fed (x - 127.5) / 127.5."""
    import onnxruntime as ort
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    from upr_faces_engine.embedder import align_face

    folder = _pixel_recognizer(test_pack, tmp_path / "pixels")
    pack = find_pack(folder)
    assert pack.recognizer_normalises_input is True
    assert find_pack(test_pack).recognizer_normalises_input is False
    pixels = Analyzer(pack, threads=1)
    crops = []
    for photo in labelled_photos:
        if photo.faces == 0:
            continue
        image = read_image(photo.path)
        crops += [align_face(image, det.landmarks) for det in analyzer.detect(image)]
    assert len(crops) == 30
    ours = analyzer.embedder.embed_aligned(crops)
    theirs = pixels.embedder.embed_aligned(crops)
    cosines = np.sum(ours * theirs, axis=1)
    assert float(cosines.min()) > 0.999
    # the original recognizer: RGB, (x - 127.5) / 127.5, as before
    session = ort.InferenceSession(str(test_pack / REC), providers=["CPUExecutionProvider"])
    rgb = np.stack(crops)[..., ::-1].astype(np.float32)
    blob = ((rgb - 127.5) / 127.5).transpose(0, 3, 1, 2)
    raw = session.run(None, {session.get_inputs()[0].name: blob})[0]
    np.testing.assert_allclose(ours, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    # InsightFace reads the same convention from the variant's graph
    reference = ArcFaceONNX(str(folder / REC))
    assert (reference.input_mean, reference.input_std) == (0.0, 1.0)
    ref_vectors = reference.get_feat(crops)
    ref_vectors /= np.linalg.norm(ref_vectors, axis=1, keepdims=True)
    assert float(np.sum(ref_vectors * theirs, axis=1).min()) > 0.999
    # its reference photos are embedded anew, not taken from a cache of the old ones
    assert pixels.photo_key.endswith("|pixels")
    assert not analyzer.photo_key.endswith("|pixels")
