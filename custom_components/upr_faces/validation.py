"""The schema library of the running Home Assistant, for the type checker too.

Home Assistant 2026 validates with ``probatio`` and installs it under the name
``voluptuous`` before any integration loads, so at run time ``import voluptuous`` is the
right library on every release. Only the type checker needs telling: checked against a
Home Assistant on Python 3.14 (2026.3 and later), the names come from probatio.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING and sys.version_info >= (3, 14):
    import probatio as vol
else:
    import voluptuous as vol

__all__ = ["vol"]
