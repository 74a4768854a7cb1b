"""File names from labels and flow ids: one rule wherever such a name becomes a path."""

from __future__ import annotations

import hashlib
import re

_NOT_FILE_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def file_name(name: str) -> str:
    """``name`` itself when it is file-safe, else with the other characters replaced by ``_`` and
    a short hash of ``name`` appended: two names that differ only there (classes ``web video`` and
    ``web_video``, flows ``f 1`` and ``f_1``) must not share a file and overwrite each other."""
    safe = _NOT_FILE_SAFE.sub("_", name)
    if safe == name and name not in ("", ".", ".."):
        return name
    return f"{safe or '_'}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
