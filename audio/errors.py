"""The user-facing error types.

Every package raises a subclass of :class:`LivefoleyError` for problems a user can fix (bad input,
missing weights, a vanished device).  The message says what happened *and* what to do; the CLI
prints it without a traceback and exits with the error's ``exit_code``: 2 for a command line that
asks for something impossible or contradictory (:class:`UsageError`, as argparse does for a bad
option), 1 for a failure met while doing the work (an unreadable file, a refused device, OBS gone).
Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class LivefoleyError(Exception):
    """A problem the user can act on; ``str(err)`` is the whole message."""

    exit_code = 1


class UsageError(LivefoleyError):
    """The arguments themselves are wrong: a value out of range, options that exclude each other, an
    output that would replace an input or an existing file.  Nothing was done."""

    exit_code = 2
