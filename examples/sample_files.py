"""The command line shared by the sample-data generators: ``--out`` and ``--seed``, then write the lines."""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable


def generator_main(description: str, generate: Callable[[int], list[str]], *, default_out: pathlib.Path,
                   default_seed: int) -> None:
    """Parse ``--out``/``--seed``, generate the lines and write them as one file ending in a newline."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=pathlib.Path, default=default_out, help=f"output file (default {default_out})")
    parser.add_argument("--seed", type=int, default=default_seed, help="random seed (default: the committed file's)")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = generate(args.seed)
    args.out.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"wrote {len(lines)} lines to {args.out}")
