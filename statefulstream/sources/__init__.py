"""Sources: where records come from. ``FileSource`` is the embedded default."""

from statefulstream.records import DeadLetter, Offsets
from statefulstream.sources.base import ReadResult, Source
from statefulstream.sources.file import FileSource
from statefulstream.sources.memory import CRASH, MemorySource, SimulatedCrashError

__all__ = ["CRASH", "DeadLetter", "FilePathTopicSource", "FileSource", "KafkaSource", "MemorySource", "Offsets",
           "ReadResult", "SimulatedCrashError", "Source"]


def __getattr__(name: str) -> object:
    # Kafka-based sources need the ``kafka`` extra: import them only when asked for.
    if name == "KafkaSource":
        from statefulstream.sources.kafka import KafkaSource

        return KafkaSource
    if name == "FilePathTopicSource":
        from statefulstream.sources.file_path_topic import FilePathTopicSource

        return FilePathTopicSource
    raise AttributeError(f"module 'statefulstream.sources' has no attribute {name!r}")
