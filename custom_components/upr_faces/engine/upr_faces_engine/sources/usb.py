"""Local (USB) cameras: finding them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2

# --------------------------------------------------------------------------- USB scan


@dataclass(frozen=True, slots=True)
class UsbCamera:
    """A local camera found by :func:`scan_usb`."""

    index: int
    width: int
    height: int
    name: str

    @property
    def source(self) -> str:
        """The source string that opens it."""
        return f"usb:{self.index}"


def device_path(device: int | str) -> str:
    return f"/dev/video{device}" if isinstance(device, int) else device


def _sys_name(index: int) -> str | None:
    try:
        return Path(f"/sys/class/video4linux/video{index}/name").read_text().strip() or None
    except OSError:
        return None


def _device_exists(index: int) -> bool:
    return os.path.exists(f"/dev/video{index}")


def scan_usb(max_index: int = 6) -> list[UsbCamera]:
    """Probe ``/dev/video0`` .. ``/dev/video{max_index-1}`` and list those that deliver a
    picture. Every device opened is released. Blocking: run it in an executor."""
    found: list[UsbCamera] = []
    for index in range(max_index):
        if not _device_exists(index):
            continue
        capture = cv2.VideoCapture(index, cv2.CAP_V4L2)
        try:
            if not capture.isOpened():
                continue
            ok, image = capture.read()  # metadata nodes open but give no picture
            if not ok or image is None:
                continue
            height, width = image.shape[:2]
        finally:
            capture.release()
        found.append(UsbCamera(index, width, height, _sys_name(index) or f"video{index}"))
    return found
