"""The one exception type of the data layer.

Every problem with a data file (missing, wrong checksum, truncated, unparsable, bad labels)
raises :class:`DataError` with a message that names the file and, where it applies, the
sample index, so a failing ``dvc repro`` tells the user exactly what to fix.
"""

from __future__ import annotations


class DataError(Exception):
    """A data file is missing, corrupt or inconsistent; the message names the file."""
