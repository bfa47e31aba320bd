"""Face alignment to the 112x112 ArcFace template and the recognizer that embeds it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnxruntime as ort

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]

ALIGNED_SIZE = 112
# Where the eyes, the nose tip and the mouth corners land in a 112x112 ArcFace crop.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
INPUT_MEAN = 127.5
INPUT_STD = 127.5


def similarity_transform(
    src: npt.NDArray[np.floating], dst: npt.NDArray[np.floating]
) -> FloatArray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama's method; returns the 2x3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    count, dim = src.shape
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    cov = dst_c.T @ src_c / count
    signs = np.ones(dim)
    if np.linalg.det(cov) < 0:
        signs[-1] = -1
    u, s, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    rot = np.eye(dim)
    if rank == 0:
        raise ValueError("degenerate landmarks: all points coincide")
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            rot = u @ vt
        else:
            flip = signs.copy()
            flip[-1] = -1
            rot = u @ np.diag(flip) @ vt
    else:
        rot = u @ np.diag(signs) @ vt
    scale = float(s @ signs) / float(src_c.var(axis=0).sum())
    matrix = np.zeros((2, 3))
    matrix[:, :2] = rot * scale
    matrix[:, 2] = dst_mean - scale * (rot @ src_mean)
    return matrix.astype(np.float32)


def align_face(image: ImageArray, landmarks: npt.NDArray[np.floating]) -> ImageArray:
    """Warp a face onto the 112x112 ArcFace template from its five landmarks."""
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    aligned = cv2.warpAffine(
        image, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), borderValue=(0.0, 0.0, 0.0)
    )
    return np.asarray(aligned, dtype=np.uint8)


class Embedder:
    """ArcFace-style recognizer: aligned 112x112 BGR crops in, L2-normalised embeddings out.

    The embedding size is read from the model (run once on a blank face at start). Pixels
    are fed as ``(x - 127.5) / 127.5`` in RGB; with ``raw_pixels=True`` (a graph that
    normalises its input itself: ``ModelInfo.normalises_input``) as they are, 0..255.
    """

    def __init__(self, session: ort.InferenceSession, *, raw_pixels: bool = False) -> None:
        self._session = session
        self.raw_pixels = raw_pixels
        self._mean, self._std = (0.0, 1.0) if raw_pixels else (INPUT_MEAN, INPUT_STD)
        model_input = session.get_inputs()[0]
        shape = model_input.shape
        if len(shape) != 4 or shape[2:] != [ALIGNED_SIZE, ALIGNED_SIZE]:
            raise ValueError(f"recognizer input must be [N, 3, 112, 112], got {shape}")
        self._input_name = model_input.name
        self._output_name = session.get_outputs()[0].name
        self._fixed_batch = isinstance(shape[0], int) and shape[0] > 0
        probe = self._run(np.zeros((1, 3, ALIGNED_SIZE, ALIGNED_SIZE), dtype=np.float32))
        self.embedding_size = int(probe.shape[1])

    def _run(self, blob: FloatArray) -> FloatArray:
        if self._fixed_batch and blob.shape[0] != 1:
            parts = [
                self._session.run([self._output_name], {self._input_name: b[None]})[0] for b in blob
            ]
            return np.asarray(np.concatenate(parts), dtype=np.float32)
        out = self._session.run([self._output_name], {self._input_name: blob})[0]
        return np.asarray(out, dtype=np.float32).reshape(blob.shape[0], -1)

    def embed_aligned(self, crops: list[ImageArray]) -> FloatArray:
        """Embed aligned crops in one batch; rows are L2-normalised."""
        if not crops:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        blob = np.asarray(
            cv2.dnn.blobFromImages(
                crops, 1.0 / self._std, (ALIGNED_SIZE, ALIGNED_SIZE), (self._mean,) * 3, swapRB=True
            ),
            dtype=np.float32,
        )
        raw = self._run(blob)
        return l2_normalise(raw)


def l2_normalise(vectors: FloatArray) -> FloatArray:
    """Scale each row to unit length (rows of zeros stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: FloatArray = (vectors / norms).astype(np.float32)
    return normalised
