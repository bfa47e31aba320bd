"""The upr_faces engine: face detection, recognition, galleries, registry, cameras.

Plain Python: nothing in this package imports Home Assistant. ``upr-faces serve``
(:mod:`.server`) runs it as a service for one client.
"""

__version__ = "0.2.0"
