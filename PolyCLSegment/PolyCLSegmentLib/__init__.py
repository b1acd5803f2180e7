"""Helpers of the PolyCLSegment module: MRML <-> numpy conversions (``conversions``), safe writing of
results into segmentations (``segmentedit``), ROI markups to SAM boxes (``prompts``), feature
detection without torch (``backends``), the worker thread (``worker``), core subprocesses
(``processes``) and on-demand dependency installation (``dependencies``).

Nothing here imports Qt, so the Logic runs (and is tested) with slicer-core alone.
"""
