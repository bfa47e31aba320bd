"""The upr_faces engine: face detection, recognition, galleries, registry, cameras.

Plain Python: nothing in this package imports Home Assistant.
"""
