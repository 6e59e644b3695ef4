"""SSLSegment's widget, in parts: the click-to-segment section (``clickSection``)."""
