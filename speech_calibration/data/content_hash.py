"""Audio files by content: their SHA-256, and the first file listed twice, as itself or as a byte-identical copy.

``prepare`` refuses a corpus that lists one recording twice (:func:`first_duplicate`): a copy in test of a train clip
under another name scores the model on what it trained on, and a clip listed twice in one split counts twice. The
``eval_set`` stage writes each file's :func:`sha256` into its manifest. Hashing is I/O-bound, so files are grouped by
size first and only sizes shared by two files or more are hashed: a corpus of varied lengths reads almost nothing
more, but one whose clips all have one length (fixed-length WAVs) is read once more, to hash every file.
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence

BLOCK = 1 << 20  # bytes read at a time


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path`` (hex), read in blocks of BLOCK bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def first_duplicate(files: Sequence[str | os.PathLike]) -> tuple[int, int, bool] | None:
    """``(i, j, same_file)`` for the first ``j`` whose file is ``files[i]`` (``i < j``) or a byte-identical copy of it
    (``same_file`` False); None when every file's content is listed once."""
    real = [os.path.realpath(f) for f in files]
    by_size: dict[int, list[int]] = defaultdict(list)
    seen: dict[str, int] = {}  # real path -> first index
    found = []  # (j, i, same_file) of every duplicate found; the smallest j is the first
    for j, path in enumerate(real):
        if path in seen:
            found.append((j, seen[path], True))
            continue
        seen[path] = j
        by_size[os.path.getsize(path)].append(j)
    for group in by_size.values():
        if len(group) > 1:
            first: dict[str, int] = {}  # hash -> first index
            for j in group:
                i = first.setdefault(sha256(real[j]), j)
                if i != j:
                    found.append((j, i, False))
    if not found:
        return None
    j, i, same_file = min(found)
    return i, j, same_file
