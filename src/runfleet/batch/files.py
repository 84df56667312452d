"""A batch's files: the JSONL input read into items, and the JSONL output written line by line.

Reading never stops at a bad line: a malformed line, a missing prompt, a duplicate id or a
byte that is not UTF-8 becomes an :class:`InvalidLine` with its line number, and every other
item proceeds. The output is appended one whole line per ``write``, so a reader (or a resume
after ``kill -9``) never sees half a line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..kinds.responses import WINDOWS
from .records import BatchItem, InvalidLine, OutputLine

__all__ = ["InputFile", "OutputFile", "encode_line", "read_items", "written_ids"]


@dataclass(slots=True)
class InputFile:
    """What one input file holds: valid items in file order, and the invalid lines."""

    items: list[BatchItem] = field(default_factory=list)
    invalid: list[InvalidLine] = field(default_factory=list)

    def refuse_windows(self) -> None:
        """Make each item that names a completion window invalid: Assistants runs have none."""
        why = "'completion_window' is for background responses (--model), not Assistants runs"
        self.invalid += [InvalidLine(i.line, why, i.id) for i in self.items if i.completion_window]
        self.invalid.sort(key=lambda bad: bad.line)
        self.items = [item for item in self.items if not item.completion_window]


def _item(number: int, raw: bytes, seen: dict[str, int]) -> BatchItem | InvalidLine:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidLine(number, f"not UTF-8 (byte {exc.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return InvalidLine(number, f"not JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(data, dict):
        return InvalidLine(number, f"expected a JSON object, got {type(data).__name__}")
    ident = data.get("id", number)
    if not isinstance(ident, str | int) or isinstance(ident, bool) or ident == "":
        return InvalidLine(number, "'id' must be a non-empty string or an integer")
    ident = str(ident)
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return InvalidLine(number, "missing 'prompt' (a non-empty string)", ident)
    if ident in seen:
        first = seen[ident]
        return InvalidLine(number, f"duplicate id {ident!r} (first on line {first})", ident, first)
    metadata = data.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        return InvalidLine(number, "'metadata' must be an object of strings", ident)
    for key in ("instructions", "model"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return InvalidLine(number, f"{key!r} must be a string", ident)
    window = data.get("completion_window")
    if window is not None and window not in WINDOWS:
        return InvalidLine(
            number, f"'completion_window' must be one of {', '.join(WINDOWS)}", ident
        )
    seen[ident] = number
    return BatchItem(
        ident, number, prompt, data.get("instructions"), metadata, data.get("model"), window
    )


def read_items(path: Path) -> InputFile:
    """Read a JSONL file of ``{"id", "prompt", ...}`` objects; blank lines are skipped.

    A file with no line at all gives an empty :class:`InputFile`: the caller refuses it whole,
    since there is nothing to report line by line.

    Raises:
        OSError: the file cannot be read.
    """
    result = InputFile()
    seen: dict[str, int] = {}
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            parsed = _item(number, raw.rstrip(b"\r\n"), seen)
            if isinstance(parsed, BatchItem):
                result.items.append(parsed)
            else:
                result.invalid.append(parsed)
    return result


def encode_line(record: OutputLine) -> str:
    """Return one output record as a single JSON line (newline included)."""
    return json.dumps(record.data(), ensure_ascii=False, separators=(",", ":")) + "\n"


class OutputFile:
    """An append-only JSONL file written one whole line per system call."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` for appending; a new batch empties it with :meth:`truncate`.

        Raises:
            OSError: it cannot be opened for writing.
        """
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record: OutputLine) -> None:
        """Append one record; with O_APPEND one write is one line, never interleaved."""
        data = encode_line(record).encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def truncate(self) -> None:
        """Empty the file (a new batch)."""
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


def written_ids(path: Path) -> set[tuple[str, int]]:
    """Return (id, line) of whole records already in an output file; cut a torn last line off.

    A line without its newline was being written when the process died: it is dropped, and
    the journal (which recorded the result first) writes it again.
    """
    if not path.exists():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    ids: set[tuple[str, int]] = set()
    for raw in data[:end].splitlines():
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and "id" in record and isinstance(record.get("line"), int):
            ids.add((str(record["id"]), record["line"]))
    return ids
