"""Named roots: file identity that survives a move of the whole collection.

A root is a name and a location (a folder): `clapdex index /mnt/library --root lib=/mnt/library`.
Files under a root's location are stored relative to it (schema.root_form: the name and the
relative path), files outside every root keep their absolute paths. The locations are a setting
of the index (index_settings.roots, JSON {name: location}); changing one touches no file row, so
an index copied to a machine that mounts the collection elsewhere works after one change
(`clapdex roots set lib=/media/library`), or, for one process, with $CLAPDEX_ROOT_<NAME>
(e.g. CLAPDEX_ROOT_LIB=/media/library): the environment wins over the stored location.

Roots translates both ways (schema.FilePath calls it for every query on files.path, so the rest
of clapdex only ever sees OS paths). Paths are matched as given (absolute, not resolved): a file
reached through a symlink to the root is outside it. Roots never nest.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Mapping

from clapdex.errors import IndexDamagedError, RootError, UnknownRootError
from clapdex.printable import one_line
from clapdex.storage.schema import (ROOT_MARK, os_text_from_db, os_text_to_db, parse_root_form,
                                    root_form)

ENV_PREFIX = "CLAPDEX_ROOT_"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Root:
    """One root: `location` is what the index stores, `effective` where it is for this process
    ($CLAPDEX_ROOT_<NAME> when set)."""

    name: str
    location: str
    effective: str
    from_env: bool

    @property
    def env_var(self) -> str:
        return env_var(self.name)

    @property
    def exists(self) -> bool:
        return os.path.isdir(self.effective)


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RootError(f"root name {one_line(repr(name))} is not usable: a letter, then letters, "
                        "digits or '_' (at most 64), so that $CLAPDEX_ROOT_<NAME> can name it")
    return name


def location_of(path: str | os.PathLike) -> str:
    """A root's location as stored: absolute and normalised, with `~` expanded. It must be an
    existing folder."""
    location = os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if not os.path.isdir(location):
        what = "is not a folder" if os.path.exists(location) else "does not exist"
        raise RootError(f"root location {one_line(location)} {what}")
    return location


def parse_spec(spec: str | os.PathLike) -> tuple[str | None, str]:
    """`NAME=PATH` -> (NAME, PATH), the name checked; a spec with no '=' before its first '/' is
    a PATH: (None, PATH). (A relative path whose first part holds '=' needs ./ in front.)"""
    text = os.fspath(spec)
    head, equals, location = text.partition("=")
    if not equals or os.sep in head or "/" in head:
        return None, text
    if not location:
        raise RootError(f"root {one_line(text)} names no location (NAME=PATH)")
    return check_name(head), location


def name_for(location: str, roots: Mapping[str, str]) -> str:
    """The name a root given only by its location gets: the root already there, else the folder's
    name made into a root name (a RootError if another root has that name)."""
    for name, stored in roots.items():
        if stored == location:
            return name
    base = re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(location)) or "root"
    name = (base if base[0].isalpha() else "r" + base)[:64]
    taken = next((other for other in roots if other.upper() == name.upper()), None)
    if taken is not None:
        raise RootError(f"a root named {taken!r} is already at {one_line(roots[taken])}; "
                        "name this one (NAME=PATH)")
    return name


def roots_to_column(roots: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(sorted(roots.items()))) if roots else None


def roots_from_column(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        roots = json.loads(text)
    except ValueError:
        roots = None
    if not isinstance(roots, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in roots.items()):
        raise IndexDamagedError(f"the index's roots setting is unreadable ({one_line(text[:80])})")
    return roots


def nested(a: str, b: str) -> bool:
    """Whether one of two normalised absolute locations is the other or lies inside it."""
    return a == b or _inside(a, b) or _inside(b, a)


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


class Roots:
    """An index's roots for this process: translation between OS paths and stored paths."""

    def __init__(self, stored: Mapping[str, str] | None, index: str = "",
                 environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        self.index = index
        self.roots: dict[str, Root] = {}
        for name, location in sorted((stored or {}).items()):
            override = environ.get(env_var(name))
            effective = os.path.normpath(os.path.abspath(os.path.expanduser(override))) \
                if override else location
            self.roots[name] = Root(name, location, effective, bool(override))
        listed = list(self.roots.values())
        for i, a in enumerate(listed):
            for b in listed[i + 1:]:
                if nested(a.effective, b.effective):
                    raise RootError(f"roots {a.name!r} ({one_line(a.effective)}) and {b.name!r} "
                                    f"({one_line(b.effective)}) nest; roots must not "
                                    f"(check {a.env_var if a.from_env else b.env_var})"
                                    if a.from_env or b.from_env else
                                    f"roots {a.name!r} and {b.name!r} nest")
        # Longest first: the most specific root of a path (roots never nest, but be exact).
        self._order = sorted(listed, key=lambda r: -len(r.effective))

    def __bool__(self) -> bool:
        return bool(self.roots)

    def split(self, path: str) -> tuple[Root, str] | None:
        """(root, '/'-separated path relative to it) of an OS path under a root, else None."""
        if not os.path.isabs(path):
            return None
        for root in self._order:
            if path == root.effective or _inside(path, root.effective):
                relative = path[len(root.effective):].lstrip(os.sep)
                return root, relative.replace(os.sep, "/") if os.sep != "/" else relative
        return None

    def to_db(self, path: str) -> str:
        """The stored form of an OS path."""
        found = self.split(path) if self.roots else None
        if found is None:
            return os_text_to_db(path)
        root, relative = found
        return root_form(root.name, relative)

    def from_db(self, stored: str) -> str:
        """The OS path of a stored one (UnknownRootError for a root this index does not define)."""
        if not stored.startswith(ROOT_MARK):
            return os_text_from_db(stored)
        name, relative = parse_root_form(stored)
        root = self.roots.get(name)
        if root is None:
            raise UnknownRootError(
                f"index {self.index} has a file stored under root {name!r} "
                f"({one_line(relative)}), a root it does not define; set that root's location")
        if os.sep != "/":
            relative = relative.replace("/", os.sep)
        return root.effective + os.sep + relative if relative else root.effective


@dataclass(frozen=True)
class RootInfo:
    """A root as `clapdex roots` lists it."""

    name: str
    location: str        # stored in the index
    effective: str       # where it is for this process
    env_var: str         # the variable that moves it for one process
    from_env: bool       # effective comes from env_var
    exists: bool         # effective is a folder here
    files: int           # file rows stored under it


def describe(store) -> list[RootInfo]:
    """The roots of an open IndexStore, with their file counts."""
    counts = store.root_counts()
    return [RootInfo(r.name, r.location, r.effective, r.env_var, r.from_env, r.exists,
                     counts.get(r.name, 0)) for r in store.roots.roots.values()]
