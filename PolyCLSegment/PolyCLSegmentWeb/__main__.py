"""``python -m PolyCLSegmentWeb --data DIR`` (run from PolyCLSegment/, or use Testing/web.sh)."""

from PolyCLSegmentWeb.app import main

main()
