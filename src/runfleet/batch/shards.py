"""A batch split into shards (``--shard K/N``) on any number of hosts, and their outputs merged.

Shard K of N takes the input lines whose id hashes to K: a BLAKE2b digest of the id, not
Python's ``hash`` (salted per process), so every host splits the same file the same way
without talking to the others. Each shard is an ordinary batch with its own output and journal
(``results.jsonl`` becomes ``results.2of3.jsonl`` and its journal beside it), so a shard
resumes, or reruns on another host from its journal file, as any batch does. An invalid line is
the shard's of its id (its line number when it has none), so it is reported exactly once.

:func:`merge_outputs` joins the shards' outputs into one file in input order, each line once,
and says which lines are missing or came twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: `runfleet --help` imports this, and files imports openai
    from .files import InputFile

__all__ = ["MergeReport", "Shard", "merge_outputs"]


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (from 1) of ``count``: the lines whose id hashes to it."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(
                f"shard {self.index}/{self.count}: expected K/N with 1 <= K <= N (e.g. 2/3)"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Read ``K/N`` (``2/3``: the second of three shards).

        Raises:
            ValueError: not two integers around a slash, or K outside 1..N.
        """
        k, slash, n = text.partition("/")
        if not slash or not k.strip().isdigit() or not n.strip().isdigit():
            raise ValueError(f"not a shard: {text!r} (expected K/N, e.g. 2/3)")
        return cls(int(k), int(n))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, ident: str) -> bool:
        """Whether the line with id ``ident`` is this shard's."""
        digest = hashlib.blake2b(ident.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index - 1

    def select(self, source: InputFile) -> InputFile:
        """Return this shard's part of an input file: its items and its invalid lines."""
        return dataclasses.replace(
            source,
            items=[item for item in source.items if self.owns(item.id)],
            invalid=[bad for bad in source.invalid if self.owns(bad.output().id)],
        )

    def output(self, out: Path) -> Path:
        """Return this shard's output path for the batch's ``out``: ``results.2of3.jsonl``."""
        return out.with_name(f"{out.stem}.{self.index}of{self.count}{out.suffix}")


@dataclass(slots=True)
class MergeReport:
    """What :func:`merge_outputs` found: lines written, lines seen twice, lines missing."""

    written: int = 0
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    missing: list[tuple[str, int]] = field(default_factory=list)
    torn: int = 0
    """Lines cut short (a shard killed mid-write and not resumed): left out."""

    @property
    def ok(self) -> bool:
        """Every expected line is there, once."""
        return not self.duplicates and not self.missing and not self.torn

    def text(self) -> str:
        """Return the one-paragraph summary the CLI prints."""
        parts = [f"{self.written:,} line{'' if self.written == 1 else 's'} merged"]
        if self.duplicates:
            first = ", ".join(f"{i!r} (line {n})" for i, n in self.duplicates[:3])
            parts.append(f"{len(self.duplicates)} seen twice and kept once (first: {first})")
        if self.missing:
            first = ", ".join(f"{i!r} (line {n})" for i, n in self.missing[:3])
            parts.append(f"{len(self.missing)} missing (first: {first})")
        if self.torn:
            parts.append(f"{self.torn} torn line(s) left out")
        return "; ".join(parts)


def merge_outputs(out: Path, parts: list[Path], *, input: Path | None = None) -> MergeReport:
    """Join shard outputs into ``out`` in input-line order, each (id, line) once.

    With ``input``, every line of it must be in some part (the ids a shard would write for
    it); those that are not are reported missing. ``out`` is written whole to a temporary file
    and renamed, so a reader never sees half a merge.

    Raises:
        OSError: a part or the input cannot be read, or ``out`` cannot be written.
        ValueError: ``out`` is also one of the parts.
    """
    if any(out.resolve() == part.resolve() for part in parts):
        raise ValueError(f"{out} is one of the shard outputs; merge into another file")
    report = MergeReport()
    lines: dict[tuple[str, int], bytes] = {}
    for part in parts:
        for raw in part.read_bytes().splitlines(keepends=True):
            key = _key(raw)
            if key is None:
                report.torn += bool(raw.strip())
            elif key in lines:
                report.duplicates.append(key)
            else:
                lines[key] = raw
    if input is not None:
        from .files import read_items  # imports the SDK: only when checking

        source = read_items(input)
        expected = [(i.id, i.line) for i in source.items]
        expected += [(bad.output().id, bad.line) for bad in source.invalid]
        report.missing = sorted((k for k in expected if k not in lines), key=lambda k: k[1])
    tmp = out.with_name(out.name + ".merging")
    with tmp.open("wb") as f:
        for key in sorted(lines, key=lambda k: k[1]):
            f.write(lines[key])
    os.replace(tmp, out)
    report.written = len(lines)
    return report


def _key(raw: bytes) -> tuple[str, int] | None:
    """Return a whole output line's (id, line); None for a torn or foreign line."""
    if not raw.endswith(b"\n"):
        return None
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("line"), int):
        return None
    return str(record.get("id")), record["line"]
