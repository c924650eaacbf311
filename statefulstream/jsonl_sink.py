"""``JsonlFileSink``: one JSON-lines file per batch id, written atomically."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from statefulstream.errors import SinkError
from statefulstream.json_rows import encode_rows
from statefulstream.sink import Sink, SinkContext

_PART = re.compile(r"^part-(\d{8,})\.jsonl$")


class JsonlFileSink(Sink):
    """Writes each batch to ``<directory>/part-<batch_id:08d>.jsonl``, one JSON object per line.

    A batch file is written to a temporary file in the same directory,
    fsynced, and renamed over ``part-<batch_id>.jsonl``; the directory is then
    fsynced. A reader therefore sees either no file or the whole batch, and a
    replayed batch id replaces its file with the same content: the sink is
    idempotent per batch id. A batch with no rows writes an empty file, so
    every written batch id is visible.

    Rows are encoded with orjson (dataclasses, datetimes as ISO-8601 UTC,
    sets as sorted lists, ``Decimal`` as strings). A row that cannot be
    encoded is dead-lettered through the sink context; the batch goes on.

    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> sink = JsonlFileSink(directory)
    >>> sink.write(1, [{"n": 2}]); sink.write(0, [{"n": 1}]); sink.write(1, [{"n": 2}])
    >>> JsonlFileSink.read_all(directory)
    [{'n': 1}, {'n': 2}]

    Args:
        directory: where the batch files go; created if missing.
    """

    name = "file"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._context: SinkContext | None = None

    def __repr__(self) -> str:
        return f"JsonlFileSink({str(self.directory)!r})"

    def open(self, context: SinkContext) -> None:
        """Create the directory and remember the context (for rows that cannot be encoded)."""
        self._context = context
        self._mkdir()

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Atomically write (or rewrite) ``part-<batch_id>.jsonl``.

        Raises:
            SinkError: the file cannot be written (disk full, permissions);
                no partial file is left behind.
        """
        encoded = encode_rows(rows, batch_id=batch_id, sink=self.name, context=self._context)
        data = b"".join(line + b"\n" for line in encoded if line is not None)
        self._mkdir()
        target = self.path_for(batch_id)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; batch files are for others to read
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            _fsync_dir(self.directory)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            msg = (f"file sink: cannot write batch {batch_id} to {str(target)!r}: {exc}; "
                   f"check the directory is writable and the disk has room (the batch will be replayed)")
            raise SinkError(msg) from exc

    def path_for(self, batch_id: int) -> Path:
        """Return the file that holds ``batch_id``."""
        return self.directory / f"part-{batch_id:08d}.jsonl"

    @classmethod
    def read_batches(cls, directory: str | os.PathLike[str]) -> dict[int, list[Any]]:
        """Read every batch file of ``directory`` into ``{batch_id: rows}``, in batch order.

        Temporary files of an interrupted write are ignored. A missing
        directory reads as no batches.
        """
        root = Path(directory)
        if not root.is_dir():
            return {}
        found = sorted((int(m.group(1)), root / m.group(0))
                       for m in map(_PART.match, os.listdir(root)) if m)
        return {batch_id: [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
                for batch_id, path in found}

    @classmethod
    def read_all(cls, directory: str | os.PathLike[str]) -> list[Any]:
        """Read every row of ``directory``, batches in batch-id order, rows in written order."""
        return [row for rows in cls.read_batches(directory).values() for row in rows]

    def _mkdir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"file sink: cannot create directory {str(self.directory)!r}: {exc}"
            raise SinkError(msg) from exc


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: fsync the directory entry (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself is still atomic
    finally:
        os.close(fd)
