"""The one exception type of the data layer (defined in :mod:`pipeline.errors`).

Every problem with a data file (missing, wrong checksum, truncated, unparsable, bad labels)
raises :class:`DataError` with a message that names the file and, where it applies, the
sample index, so a failing ``dvc repro`` tells the user exactly what to fix.
"""

from __future__ import annotations

from ..errors import DataError

__all__ = ["DataError"]
