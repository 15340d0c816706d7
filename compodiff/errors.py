"""The one base of every bad-input error (a missing or malformed file, a wrong setting): the CLI and the
service answer these with one line naming what and where, and let every other exception surface."""


class InputError(ValueError):
    pass
