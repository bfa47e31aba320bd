"""SCRFD face detector: boxes, scores and five landmarks in original image coordinates.

The decoding follows SCRFD's anchor-free heads: for each stride (8, 16, 32) the network
predicts, per anchor centre, a score, four distances to the box sides and ten landmark
offsets, all in units of the stride. Two anchors share each centre in the models that ship
with InsightFace's packs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnxruntime as ort

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]

STRIDES = (8, 16, 32)
INPUT_MEAN = 127.5
INPUT_STD = 128.0
DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_NMS_THRESHOLD = 0.4
DEFAULT_MAX_BATCH = 8


@dataclass(frozen=True, slots=True)
class Detection:
    """One face: box ``[x1, y1, x2, y2]``, score, landmarks ``(5, 2)`` (eyes, nose, mouth)."""

    box: FloatArray
    score: float
    landmarks: FloatArray

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return max(0.0, self.width) * max(0.0, self.height)


def nms(boxes: FloatArray, scores: FloatArray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression; returns the kept indexes, best first.

    Uses the same inclusive-pixel overlap as SCRFD's reference so results agree exactly.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return keep


class ScrfdDetector:
    """Runs an SCRFD ONNX session on BGR images of any size.

    ``det_size`` is the longest side of the network input (640 by default, 320 for speed).
    With ``square=True`` the image is letterboxed into ``det_size x det_size`` (as the
    reference implementation does); otherwise the input keeps the image's aspect ratio,
    rounded up to a multiple of 32, which saves work on 16:9 video frames.

    ``input_size`` is the ``(width, height)`` a model's graph fixes (``ModelInfo.input_size``):
    every image is then letterboxed into exactly that, and ``det_size`` and ``square`` do
    not apply. None (dynamic height and width) keeps them.

    ``batch`` is the most images one run takes (:meth:`detect_batch`) where the graph's
    batch dimension is symbolic; a graph that fixes it to 1 is run once per image.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        det_size: int = 640,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nms_threshold: float = DEFAULT_NMS_THRESHOLD,
        square: bool = True,
        input_size: tuple[int, int] | None = None,
        batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if det_size < 32 or det_size % 32:
            raise ValueError(f"det_size must be a multiple of 32, got {det_size}")
        if input_size is not None and min(input_size) < 32:
            raise ValueError(f"fixed detector input must be at least 32x32, got {input_size}")
        self._session = session
        self.det_size = det_size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.square = square
        self.input_size = input_size
        self._input_name = session.get_inputs()[0].name
        outputs = session.get_outputs()
        if len(outputs) != 9:
            raise ValueError(
                f"SCRFD detector with landmarks needs 9 outputs, this model has {len(outputs)}"
            )
        # Group outputs by head (score: 1, box: 4, landmarks: 10 values per anchor), keeping
        # the stride order in which the graph declares them.
        heads: dict[int, list[str]] = {1: [], 4: [], 10: []}
        for output in outputs:
            width = output.shape[-1]
            if width not in heads:
                raise ValueError(f"unexpected SCRFD output {output.name} of shape {output.shape}")
            heads[width].append(output.name)
        self._output_names = heads[1] + heads[4] + heads[10]
        self._batched = len(outputs[0].shape) == 3
        # several images per run only where the graph's batch is symbolic and its outputs
        # keep it apart (N, anchors, values): 2-D outputs interleave the images' anchors
        batch_dim = session.get_inputs()[0].shape[0]
        dynamic = not (isinstance(batch_dim, int) and batch_dim > 0)
        self._max_batch = max(1, batch) if dynamic and self._batched else 1
        self._centers: dict[tuple[int, int, int], FloatArray] = {}

    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """The network input ``(width, height)`` used for an image of this size."""
        if self.input_size is not None:
            return self.input_size
        if self.square:
            return self.det_size, self.det_size
        scale = self.det_size / max(height, width)
        in_w = max(32, math.ceil(width * scale / 32) * 32)
        in_h = max(32, math.ceil(height * scale / 32) * 32)
        return in_w, in_h

    def _anchor_centers(self, height: int, width: int, stride: int) -> FloatArray:
        key = (height, width, stride)
        centers = self._centers.get(key)
        if centers is None:
            xs, ys = np.meshgrid(np.arange(width), np.arange(height))
            grid = np.stack([xs, ys], axis=-1).astype(np.float32)
            centers = (grid * stride).reshape(-1, 2)
            centers = np.repeat(centers, 2, axis=0)
            if len(self._centers) < 64:
                self._centers[key] = centers
        return centers

    @property
    def max_batch(self) -> int:
        """How many images one run of the network takes: ``batch`` for a graph with a
        symbolic batch dimension and batched (3-D) outputs, else 1 (images are looped)."""
        return self._max_batch

    def _blob(self, image: ImageArray) -> tuple[FloatArray, float, int, int]:
        """The network input of one image, its scale and the input ``(width, height)``."""
        img_h, img_w = image.shape[:2]
        in_w, in_h = self.input_size_for(img_h, img_w)
        if img_h / img_w > in_h / in_w:
            new_h = in_h
            new_w = int(new_h / (img_h / img_w))
        else:
            new_w = in_w
            new_h = int(new_w * (img_h / img_w))
        scale = new_h / img_h
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
        blob = cv2.dnn.blobFromImage(
            canvas, 1.0 / INPUT_STD, (in_w, in_h), (INPUT_MEAN,) * 3, swapRB=True
        )
        return np.asarray(blob, dtype=np.float32), scale, in_w, in_h

    def detect(self, image: ImageArray, max_faces: int = 0) -> list[Detection]:
        """Find faces in a BGR ``uint8`` image; boxes and landmarks in its own coordinates."""
        blob, scale, in_w, in_h = self._blob(image)
        outs = self._session.run(self._output_names, {self._input_name: blob})
        if self._batched:
            outs = [out[0] for out in outs]
        return self._decode(outs, scale, in_w, in_h, max_faces)

    def detect_batch(
        self, images: Sequence[ImageArray], max_faces: int = 0
    ) -> list[list[Detection]]:
        """:meth:`detect` for several images, in runs of up to :attr:`max_batch` images of
        the same network input size; the faces of each image, in order. Same results as
        one image at a time."""
        if self._max_batch <= 1:
            return [self.detect(image, max_faces) for image in images]
        results: list[list[Detection]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[tuple[int, FloatArray, float]]] = {}
        for index, image in enumerate(images):
            blob, scale, in_w, in_h = self._blob(image)
            groups.setdefault((in_w, in_h), []).append((index, blob, scale))
        for (in_w, in_h), members in groups.items():
            for start in range(0, len(members), self._max_batch):
                chunk = members[start : start + self._max_batch]
                batch = np.concatenate([blob for _i, blob, _s in chunk])
                outs = self._session.run(self._output_names, {self._input_name: batch})
                for row, (index, _blob, scale) in enumerate(chunk):
                    results[index] = self._decode(
                        [out[row] for out in outs], scale, in_w, in_h, max_faces
                    )
        return results

    def _decode(
        self, outs: Sequence[FloatArray], scale: float, in_w: int, in_h: int, max_faces: int
    ) -> list[Detection]:
        """Faces from the nine outputs of one image (without their batch dimension)."""
        scores_l: list[FloatArray] = []
        boxes_l: list[FloatArray] = []
        kps_l: list[FloatArray] = []
        for idx, stride in enumerate(STRIDES):
            scores = outs[idx]
            box_pred = outs[idx + 3]
            kps_pred = outs[idx + 6]
            scores = scores.reshape(-1)
            positive = np.flatnonzero(scores >= self.score_threshold)
            if positive.size == 0:
                continue
            # ceil: a fixed input need not be a multiple of 32 (padded convolutions round up)
            rows, cols = -(-in_h // stride), -(-in_w // stride)
            centers = self._anchor_centers(rows, cols, stride)[positive]
            dist = box_pred[positive] * stride
            boxes = np.stack(
                [
                    centers[:, 0] - dist[:, 0],
                    centers[:, 1] - dist[:, 1],
                    centers[:, 0] + dist[:, 2],
                    centers[:, 1] + dist[:, 3],
                ],
                axis=-1,
            )
            kps = kps_pred[positive] * stride
            kps = kps.reshape(-1, 5, 2) + centers[:, None, :]
            scores_l.append(scores[positive])
            boxes_l.append(boxes)
            kps_l.append(kps)
        if not scores_l:
            return []
        all_scores = np.concatenate(scores_l).astype(np.float32)
        order = np.argsort(-all_scores, kind="stable")
        all_scores = all_scores[order]
        all_boxes = (np.concatenate(boxes_l) / scale).astype(np.float32)[order]
        all_kps = (np.concatenate(kps_l) / scale).astype(np.float32)[order]
        keep = nms(all_boxes, all_scores, self.nms_threshold)
        faces = [Detection(all_boxes[i], float(all_scores[i]), all_kps[i]) for i in keep]
        if max_faces > 0 and len(faces) > max_faces:
            faces = sorted(faces, key=lambda face: face.area, reverse=True)[:max_faces]
        return faces
