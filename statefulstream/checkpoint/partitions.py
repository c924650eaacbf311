"""The partition folders of a scale-out checkpoint (``KafkaSource(scale_out=...)``, docs/scaleout.md).

A process of a scaled-out app keeps one ordinary checkpoint folder per source
partition it owns or owned, ``<checkpoint_dir>/partitions/<topic>-<p>/``
(``state/``, ``offsets/``, ``progress/``, ``dead_letters/``). A folder named
``<topic>-<p>.restoring`` is a restore from the changelog that is running or
was interrupted; the next owner of the partition starts it again.
"""

from __future__ import annotations

import os
import re

PARTITIONS_DIR = "partitions"
"""The folder of a scale-out checkpoint that holds one checkpoint folder per source partition."""
RESTORING_SUFFIX = ".restoring"
"""The suffix of a partition folder being rebuilt from the changelog."""
_NAME = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)$")


def is_partitioned(checkpoint_dir: str) -> bool:
    """Whether ``checkpoint_dir`` is a scale-out checkpoint (it has a ``partitions/`` folder)."""
    return os.path.isdir(os.path.join(checkpoint_dir, PARTITIONS_DIR))


def _order(name: str) -> tuple[str, int, str]:
    match = _NAME.match(name)
    return (match["topic"], int(match["partition"]), "") if match else (name, -1, name)


def partition_folders(checkpoint_dir: str) -> list[tuple[str, str]]:
    """``(name, path)`` of each partition's checkpoint folder, by topic then partition number.

    Restores in progress (``*.restoring``) are left out: see :func:`restoring_folders`.
    """
    root = os.path.join(checkpoint_dir, PARTITIONS_DIR)
    names = [n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)) and not n.endswith(RESTORING_SUFFIX)]
    return [(name, os.path.join(root, name)) for name in sorted(names, key=_order)]


def restoring_folders(checkpoint_dir: str) -> list[str]:
    """Names of the partitions whose restore from the changelog is running or was interrupted."""
    root = os.path.join(checkpoint_dir, PARTITIONS_DIR)
    names = [n.removesuffix(RESTORING_SUFFIX) for n in os.listdir(root) if n.endswith(RESTORING_SUFFIX)]
    return sorted(names, key=_order)
