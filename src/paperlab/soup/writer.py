"""A streaming writer for a sharded safetensors checkpoint.

All output tensors' names, dtypes and shapes are known before the first byte is merged, so
each shard's header (with every tensor's byte range) is written up front and the tensor data
is then appended piece by piece as it is computed. The output buffer is therefore one piece,
whatever the shard size; ``save_file`` would need the whole shard in memory.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paperlab.soup.checkpoint import TAG_OF
from paperlab.soup.direct_file import AppendFile

INDEX_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class OutTensor:
    """One tensor of the output: name, dtype name, shape and size in bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def plan_shards(tensors: Sequence[OutTensor], shard_size: int) -> list[list[OutTensor]]:
    """Split tensors, in order, into shards of at most ``shard_size`` bytes (a larger tensor
    gets a shard of its own)."""
    shards: list[list[OutTensor]] = [[]]
    used = 0
    for t in tensors:
        if shards[-1] and used + t.nbytes > shard_size:
            shards.append([])
            used = 0
        shards[-1].append(t)
        used += t.nbytes
    return [s for s in shards if s]


def _header(tensors: Sequence[OutTensor], dtype_meta: str | None) -> bytes:
    entries: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        entries[t.name] = {"dtype": TAG_OF[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(entries, separators=(",", ":")).encode()
    # Pad with spaces so tensor data starts 8-byte aligned, as the format recommends.
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class ShardedWriter:
    """Write tensors (in plan order, each as one or more byte pieces) into shards plus an index.

    Usage: ``w.write(name, data)`` for every piece in order, then ``w.close()``.
    """

    def __init__(self, out_dir: Path, tensors: Sequence[OutTensor], shard_size: int) -> None:
        self.out_dir = out_dir
        self.shards = plan_shards(tensors, shard_size)
        n = len(self.shards)
        self.files = (
            ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        self._queue = [(i, t) for i, shard in enumerate(self.shards) for t in shard]
        self._pos = 0  # index into _queue of the tensor being written
        self._left = self._queue[0][1].nbytes if self._queue else 0
        self._shard = -1
        self._fh: AppendFile | None = None
        self.total_bytes = sum(t.nbytes for t in tensors)

    def _open_shard(self, i: int) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = AppendFile(self.out_dir / self.files[i])
        self._fh.write(_header(self.shards[i], None))
        self._shard = i

    def write(self, name: str, data: memoryview | bytes) -> None:
        """Append the next piece of bytes of tensor ``name`` (pieces must come in order)."""
        shard, t = self._queue[self._pos]
        if t.name != name:
            raise RuntimeError(f"writer expected tensor {t.name!r}, got {name!r}")
        if shard != self._shard:
            self._open_shard(shard)
        if len(data) > self._left:
            raise RuntimeError(f"too many bytes for tensor {name!r}")
        assert self._fh is not None
        self._fh.write(data)
        self._left -= len(data)
        while self._left == 0 and self._pos + 1 < len(self._queue):
            self._pos += 1
            self._left = self._queue[self._pos][1].nbytes
            if self._left:
                break
            # zero-size tensors: nothing to write, but their shard must exist
            if self._queue[self._pos][0] != self._shard:
                self._open_shard(self._queue[self._pos][0])

    def close(self) -> None:
        """Finish the last shard and write the index (for more than one shard)."""
        if self._left or self._pos + 1 < len(self._queue):
            raise RuntimeError("writer closed before every tensor was written")
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.close()
        if len(self.files) > 1:
            index = {
                "metadata": {"total_size": self.total_bytes},
                "weight_map": {t.name: self.files[i] for i, shard in enumerate(self.shards) for t in shard},
            }
            (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")

    def abort(self) -> None:
        """Close the open file without finishing (the caller discards the directory)."""
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fh.abort()
