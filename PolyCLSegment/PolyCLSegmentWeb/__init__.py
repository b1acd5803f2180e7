"""PolyCL Segment in the browser: a trame-slicer front end on the module's own Logic.

Start it with ``polycl-web --data DIR`` (installed with polycl-core; :mod:`polycl.weblauncher`) or
``python -m PolyCLSegmentWeb --data DIR`` with ``PolyCLSegment/`` on ``sys.path``. Importing this package
imports nothing heavy; :func:`PolyCLSegmentWeb.cli.main` builds the server.
"""
