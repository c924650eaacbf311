"""Sources: where records come from. ``FileSource`` is the embedded default."""

from statefulstream.sources.base import DeadLetter, Offsets, ReadResult, Source
from statefulstream.sources.file import FileSource
from statefulstream.sources.memory import CRASH, MemorySource, SimulatedCrash

__all__ = ["CRASH", "DeadLetter", "FileSource", "MemorySource", "Offsets", "ReadResult", "SimulatedCrash", "Source"]
