"""What every reader raises for a source that cannot be read at all (as opposed to one bad record)."""

from compodiff.errors import InputError


class SourceError(InputError):
    """The source itself is unusable: missing, unreadable, the wrong layout, an unknown key map."""
