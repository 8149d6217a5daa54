"""The one user-facing error type.

Every package raises a subclass of :class:`LivefoleyError` for problems a user can fix (bad input,
missing weights, a vanished device).  The message says what happened *and* what to do; the CLI
prints it without a traceback.  Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class LivefoleyError(Exception):
    """A problem the user can act on; ``str(err)`` is the whole message."""
