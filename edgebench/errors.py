"""The base of every error that is the user's to fix; the CLI prints its message as one
line instead of a traceback."""


class EdgebenchError(Exception):
    pass
