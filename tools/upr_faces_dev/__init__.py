"""upr_faces development tools: the dev registry, the clip builder and the benchmarks.

They live beside the engine in the repository and are not part of what HACS installs.
"""
