"""Errors raised by the engine; each carries a stable ``key`` that the Home Assistant layer
maps to a translated message, and a plain English message for logs and the CLI."""

from __future__ import annotations


class UprFacesError(Exception):
    """Base of every engine error."""

    key = "unknown"


class ModelPackError(UprFacesError):
    """A model pack is missing, incomplete, corrupt or cannot be downloaded."""

    key = "model_pack"


class ImageError(UprFacesError):
    """An image cannot be read or decoded."""

    key = "bad_image"
