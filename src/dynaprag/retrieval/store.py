"""The passage store every local index keeps next to itself: JSONL + memory-mapped offsets.

An index returns row numbers; the store turns a row into a :class:`Passage` with one
``pread`` at a known offset, so a 21M-passage store costs 170 MB of (memory-mapped) offsets
and nothing else in RAM. Plain JSONL (no pickle) keeps the files inspectable and safe.
"""
from __future__ import annotations

import json
import os
from array import array
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from dynaprag.corpus import Passage

PASSAGES = "passages.jsonl"
OFFSETS = "passages.offsets.npy"


class PassageStore:
    """Random access to passages by row: ``store[i]``, ``store.get_many(rows)``, ``len(store)``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path, offsets = self.folder / PASSAGES, self.folder / OFFSETS
        if not path.is_file() or not offsets.is_file():
            raise FileNotFoundError(f"no passage store in {self.folder} (expected {PASSAGES} and {OFFSETS})")
        self.offsets = np.load(offsets, mmap_mode="r", allow_pickle=False)
        self._fd = os.open(path, os.O_RDONLY)
        self._id_to_row: dict[str, int] | None = None

    @staticmethod
    def write(passages: Iterable[Passage], folder: str | Path) -> Iterator[Passage]:
        """Stream ``passages`` into a store in ``folder``, yielding each one as it is written.

        Yielding lets an index builder tokenise or encode the same pass over the corpus. The
        files appear (atomically renamed) only after the iteration completes.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp_path, tmp_off = folder / (PASSAGES + ".tmp"), folder / (OFFSETS + ".tmp.npy")
        offsets = array("q", [0])
        with open(tmp_path, "wb") as handle:
            for p in passages:
                line = json.dumps({"id": p.id, "title": p.title, "text": p.text, **p.extra},
                                  ensure_ascii=False).encode("utf-8") + b"\n"
                handle.write(line)
                offsets.append(offsets[-1] + len(line))
                yield p
        np.save(tmp_off, np.frombuffer(offsets, dtype=np.int64), allow_pickle=False)
        os.replace(tmp_path, folder / PASSAGES)
        os.replace(tmp_off, folder / OFFSETS)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> Passage:
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} outside the store of {len(self)} passages")
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        record = json.loads(os.pread(self._fd, end - start, start))
        pid, title, text = record.pop("id"), record.pop("title"), record.pop("text")
        return Passage(id=pid, title=title, text=text, extra=record)

    def get_many(self, rows: Iterable[int]) -> list[Passage]:
        return [self[int(r)] for r in rows]

    def __iter__(self) -> Iterator[Passage]:
        for row in range(len(self)):
            yield self[row]

    def row_of(self, passage_id: str) -> int:
        """The row of a passage id (builds an id map on first use: O(n) memory)."""
        if self._id_to_row is None:
            self._id_to_row = {p.id: i for i, p in enumerate(self)}
        try:
            return self._id_to_row[passage_id]
        except KeyError:
            raise KeyError(f"passage id {passage_id!r} is not in the store {self.folder}") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
