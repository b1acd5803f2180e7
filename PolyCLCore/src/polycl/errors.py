"""Exceptions raised by polycl. Every user-facing failure is a :class:`PolyCLError`.

The command line prints a ``PolyCLError``'s message and exits with status 2; anything else is a bug
and shows a traceback.
"""


class PolyCLError(Exception):
    """Base class for errors a user can act on (bad input, missing weights, ...)."""


class InputError(PolyCLError):
    """An input file or array is missing, unreadable or not what the operation needs."""


class NotCTError(InputError):
    """The image does not look like CT in Hounsfield units."""


class GeometryError(InputError):
    """Two images that must share a grid (or at least overlap) do not."""


class ChecksumError(PolyCLError):
    """A file's SHA-256 does not match the registered value."""


class Cancelled(PolyCLError):
    """A long operation was cancelled by its caller; nothing was written."""
