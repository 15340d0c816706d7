"""WebDataset tar shards read as samples, refusing what could escape or alias.

A sample is the members that share a key (``dir/000123.jpg``, ``dir/000123.txt`` -> key ``dir/000123``),
as WebDataset groups them; only one sample's bytes are in memory at a time. Member names are normalised
as WebDataset reads them (``./000.png`` is ``000.png``).
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from compodiff.errors import InputError


class UnsafeMember(InputError):
    """An absolute name, a name that climbs out with '..', or a link: a hostile or broken archive."""


class TarError(InputError):
    pass


def member_key(name: str) -> tuple[str, str] | None:
    """(sample key, extension) of a member name: ``./a/000.png`` -> (a/000, png); None for a name with no
    extension; UnsafeMember for an absolute or climbing name."""
    p = PurePosixPath(posixpath.normpath(name))
    if p.is_absolute() or ".." in p.parts:
        raise UnsafeMember(name)
    if "." not in p.name:
        return None
    stem, ext = p.name.split(".", 1)
    return (str(p.parent / stem) if str(p.parent) != "." else stem), ext.lower()


def iter_samples(path: str | Path, keep=lambda ext: True, strict: bool = True) -> Iterator[tuple[str, dict]]:
    """(key, {extension: bytes}) per sample, in the order of each key's first member. ``keep(ext)``: which
    members to read. ``strict``: an unsafe member refuses the whole tar (UnsafeMember naming it) before any
    sample is read; otherwise it comes back first as (name, None), to be counted and skipped.

    Members are grouped by key wherever they lie (``tar -cf x.tar dir`` orders by directory listing, not
    by sample), from the headers alone; each sample's bytes are read when it is yielded."""
    path = Path(path)
    try:
        with tarfile.open(path, mode="r:*") as tar:
            groups: dict[str, list[tuple[str, tarfile.TarInfo]]] = {}
            unsafe: list[str] = []
            for member in tar:  # headers only: the index of the archive
                if member.issym() or member.islnk():
                    if strict:
                        raise UnsafeMember(f"{path}: member {member.name!r} is a link; the tar is refused")
                    unsafe.append(member.name)
                    continue
                if not member.isfile():
                    continue
                try:
                    parsed = member_key(member.name)
                except UnsafeMember:
                    if strict:
                        raise UnsafeMember(f"{path}: member {member.name!r} is outside the archive "
                                           f"(absolute or '..'); the tar is refused") from None
                    unsafe.append(member.name)
                    continue
                if parsed is not None and keep(parsed[1]):
                    groups.setdefault(parsed[0], []).append((parsed[1], member))
            tar.members = []  # the index is in groups; drop tarfile's own copy
            for name in unsafe:
                yield name, None
            for key, members in groups.items():
                yield key, {ext: tar.extractfile(m).read() for ext, m in members}
    except (tarfile.TarError, OSError, EOFError) as err:
        raise TarError(f"{path}: not a readable tar ({err})") from None
