"""PolyCL Segment in the browser: a trame-slicer front end on the module's PolyCLSegmentLogic.

Start it with ``bash Testing/web.sh --data DIR`` (see :mod:`PolyCLSegmentWeb.app`). Importing this
package imports nothing heavy; :func:`PolyCLSegmentWeb.app.main` builds the server.
"""
