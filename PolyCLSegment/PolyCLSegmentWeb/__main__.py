"""``python -m PolyCLSegmentWeb --data DIR`` (with ``PolyCLSegment/`` on sys.path; ``polycl-web`` does that)."""

from PolyCLSegmentWeb.cli import main

main()
