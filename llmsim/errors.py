"""User-facing errors.

`LlmsimError` carries a one-line message meant for the person running llmsim: the CLI prints it
without a traceback and exits non-zero. Raise it for bad input (a malformed file, an unknown key,
an impossible configuration), never for bugs.
"""


class LlmsimError(Exception):
    """A problem with the user's input, reported as one clear line."""
