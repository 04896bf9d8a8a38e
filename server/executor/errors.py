"""The executor's own exceptions, in a leaf module every other executor module may import.

The job kinds raise them from worker processes (they travel back pickled); the runner reads them to
decide between a retry and a final failure.
"""

from __future__ import annotations


class JobAbandoned(Exception):
    """The attempt no longer holds its job (lease lost, or cancellation requested)."""


class PermanentJobError(Exception):
    """Retrying cannot help (a bad training spec, an unusable data source): FAILED at once."""


class DataSourceError(PermanentJobError):
    """The spec's data source cannot be used as written, or the operator's configuration refuses it."""
