"""The line index of a text file: how many lines it has and where some of them start.

``FileSource`` counts a file's lines once, reading only bytes it has not seen,
and keeps sparse checkpoints ``(line, byte offset)`` (about one per
``CHUNK`` bytes, plus the start and end of every planned batch) so a read
seeks close to its first line. The checkpoints at a batch's start and end go
into the batch's plan (:func:`hint`), so a restarted source resumes from them
(:meth:`FileIndex.from_hint`) instead of counting the lines of everything it
read before.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator, Sequence

import orjson

from statefulstream.errors import SourceError

CHUNK = 1 << 20
"""Bytes read at a time when counting lines; also the spacing of the checkpoints."""

Hint = Sequence[int]
"""``[first line, its byte offset, end line, its byte offset, 1 if the last line has no newline yet]``."""


@dataclasses.dataclass
class FileIndex:
    """What is known about one file: how far it was counted and where its lines start.

    ``cp_lines[i]`` is a physical line number whose first byte is at
    ``cp_offsets[i]``; both lists ascend.
    """

    size: int = -1  # bytes seen at the last scan; an equal size means nothing new
    lines: int = 0  # complete lines (JSON lines: plus an unterminated last line holding a whole object)
    scanned: int = 0  # byte offset up to which ``lines`` were counted
    tail_counted: bool = False  # the last counted line has no newline yet
    cp_lines: list[int] = dataclasses.field(default_factory=lambda: [0])
    cp_offsets: list[int] = dataclasses.field(default_factory=lambda: [0])
    header: list[str] | None = None  # CSV column names
    group_starts: list[int] = dataclasses.field(default_factory=list)  # Parquet: first row of each row group, + total

    @classmethod
    def from_hint(cls, hint: Hint) -> FileIndex:
        """Rebuild the index a plan's :func:`hint` describes; the next scan counts only newer bytes."""
        lo, lo_byte, hi, hi_byte, tail = (int(v) for v in hint)
        idx = cls(lines=hi, scanned=hi_byte, tail_counted=bool(tail))
        if lo < hi or not tail:
            idx.mark(lo, lo_byte)
        if not tail:  # else the line after the tail starts past the newline still to come
            idx.mark(hi, hi_byte)
        return idx

    def mark(self, line: int, offset: int) -> None:
        """Remember that ``line`` starts at byte ``offset``."""
        k = bisect.bisect_left(self.cp_lines, line)
        if k == len(self.cp_lines) or self.cp_lines[k] != line:
            self.cp_lines.insert(k, line)
            self.cp_offsets.insert(k, offset)


def hint(path: str, idx: FileIndex, lo: int, hi: int) -> list[int]:
    """Return the :data:`Hint` of physical lines ``[lo, hi)`` (``hi <= idx.lines``) and mark both in ``idx``."""
    lo_byte, hi_byte = byte_of(path, idx, lo), byte_of(path, idx, hi)
    return [lo, lo_byte, hi, hi_byte, int(idx.tail_counted and hi == idx.lines)]


def byte_of(path: str, idx: FileIndex, line: int) -> int:
    """Return the byte offset where physical ``line`` starts (``idx.lines`` -> the end of the counted lines)."""
    if line >= idx.lines:
        return idx.scanned
    k = bisect.bisect_right(idx.cp_lines, line) - 1
    need, pos = line - idx.cp_lines[k], idx.cp_offsets[k]
    if need:
        with open(path, "rb") as f:
            f.seek(pos)
            while need:
                chunk = f.read(CHUNK)
                if not chunk:
                    msg = f"file {path!r} ended before line {line + 1}: it changed while being read"
                    raise SourceError(msg)
                found = chunk.count(b"\n")
                if found < need:
                    need -= found
                    pos += len(chunk)
                    continue
                pos += len(chunk) - len(chunk.split(b"\n", need)[-1])
                need = 0
        idx.mark(line, pos)
    return pos


def scan_lines(path: str, idx: FileIndex, *, accept_tail: bool) -> None:
    """Count the complete lines added to ``path`` since the last scan, in ``CHUNK`` reads."""
    with open(path, "rb") as f:
        pos = idx.scanned
        f.seek(pos)
        if idx.tail_counted:
            nl = f.read(1)
            if not nl:
                return
            if nl != b"\n":
                msg = (f"file {path!r}: line {idx.lines} was read as a complete JSON object without a newline, "
                       f"and then the writer appended to the same line. Terminate every line with a newline")
                raise SourceError(msg)
            pos += 1
            idx.tail_counted = False
        # Each chunk is counted where it lies: no buffer of the bytes read (a copy per chunk). `pos` is the end
        # of the last complete line, `end` of the bytes read.
        end = pos
        while chunk := f.read(CHUNK):
            cut = chunk.rfind(b"\n")
            if cut >= 0:  # else a line longer than a chunk, or the unterminated tail
                if pos - idx.cp_offsets[-1] >= CHUNK:
                    idx.cp_lines.append(idx.lines)
                    idx.cp_offsets.append(pos)
                idx.lines += chunk.count(b"\n")
                pos = end + cut + 1
            end += len(chunk)
        idx.scanned, idx.size = pos, end
        if accept_tail and end > pos:
            f.seek(pos)
            if _is_json_object(f.read(end - pos)):
                # A whole object cannot be the prefix of a longer valid line, so it is final.
                idx.lines += 1
                idx.scanned = idx.size
                idx.tail_counted = True


def _is_json_object(data: bytes) -> bool:
    try:
        return type(orjson.loads(data)) is dict
    except orjson.JSONDecodeError:
        return False


def read_line_chunks(path: str, idx: FileIndex, lo: int, hi: int) -> Iterator[tuple[int, list[bytes]]]:
    """Yield physical lines ``[lo, hi)`` of ``path`` as ``(first line, lines)`` chunks, each line with its newline.

    The file is read about ``CHUNK`` bytes at a time (``readlines``: it finds line ends with ``memchr``, where
    ``bytes.split`` tests byte by byte), seeking via the index, so a caller that decodes each chunk before
    asking for the next never holds the batch's raw lines and its decoded records at once. Only the last
    line of the file can lack its newline.
    """
    k = bisect.bisect_right(idx.cp_lines, lo) - 1
    j = bisect.bisect_left(idx.cp_lines, hi)
    line, begin = idx.cp_lines[k], idx.cp_offsets[k]
    # Read up to the first line start known at or after `hi` (the plan marks it), not a whole chunk past it.
    stop = idx.cp_offsets[j] if j < len(idx.cp_offsets) else idx.scanned
    with open(path, "rb") as f:
        f.seek(begin)
        while line < hi:
            lines = f.readlines(max(1, min(CHUNK, stop - f.tell())))
            if not lines:  # a file that shrank: what is left of it
                return
            wanted = lines[max(0, lo - line):hi - line]
            if wanted:
                yield max(line, lo), wanted
            line += len(lines)
