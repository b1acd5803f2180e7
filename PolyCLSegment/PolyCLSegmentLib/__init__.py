"""Helpers of the PolyCLSegment module, none of which imports Qt (so they run, and are tested, with
slicer-core alone): the controller both front ends drive (``controller``, with ``settings`` and the
prompt answers in ``promptanswers``), the Logic (``logic``), MRML <-> numpy conversions
(``conversions``), safe writing of results into segmentations (``segmentedit``), ROI markups to SAM
boxes (``prompts``), organ codes and colours from the ``.term.json`` (``terminology``), what the
installed core can do, found without torch (``capabilities``), running long work off the GUI
thread (``jobs``: the runner, its worker thread in ``jobs.thread`` and core subprocesses in
``jobs.process``) and on-demand dependency installation (``dependencies``).
"""
