"""User errors: bad input that the `sgilo` command reports as one line (no traceback).

The rule (`sgilo.cli.SgiloGroup`): a `ValueError` (bad input: wrong option value, wrong file content — `UserError`
is one) or an `OSError` (file system: missing, unreadable, unwritable, disk full) is the user's to fix and prints one
line; any other exception (TypeError, KeyError, AttributeError, RuntimeError, …) is a bug in our code and keeps its
traceback. Library code therefore raises `ValueError`/`UserError` for input it rejects, never TypeError/KeyError.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, reported by the CLI as one line ``sgilo: error: <message>``."""


class CheckpointKeyError(UserError, KeyError):
    """A checkpoint whose keys do not match the module (a user's file, not our bug). Also a KeyError for callers that
    catch lookups; ``str()`` is the plain message (KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
