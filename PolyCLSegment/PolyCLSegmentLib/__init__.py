"""Helpers of the PolyCLSegment module, none of which imports Qt (so they run, and are tested, with
slicer-core alone): the controller both front ends drive (``controller``, with ``settings`` and the
prompt operations in ``interaction``), the Logic (``logic``), MRML <-> numpy conversions
(``conversions``), safe writing of results into segmentations (``segmentedit``), ROI markups to SAM
boxes (``prompts``), organ codes and colours from the ``.term.json`` (``terminology``), what the
installed core can do, found without torch (``capabilities``), the worker thread (``worker``),
jobs (``jobs``), core subprocesses (``processes``) and on-demand dependency installation
(``dependencies``).
"""
