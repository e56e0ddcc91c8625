"""Encode a large corpus to one memory-mapped float16 matrix, in resumable chunks, with progress and an ETA.

Why: the dense backend's exact index (:mod:`dynaprag.retrieval.dense`) keeps float32 vectors in
RAM, fine for the demo corpus and the 10,977 paragraphs, not for the 21M DPR passages (32 GB).
:func:`encode_to_disk` writes ``vectors.f16.npy`` (``np.lib.format.open_memmap``: 768 bytes a
384-d passage, 16 GB at 21M) and ``ids.txt`` row by row; after every chunk it flushes and
records the rows done (and the wall and CPU seconds spent) in ``encoded.json``, so a killed run (kill -9 included) resumes at the
first chunk not recorded, reading but not re-encoding the passages before it. The matrix then
feeds :func:`dynaprag.retrieval.faiss_disk.build_ivfpq` chunk by chunk.

``device="cuda"`` encodes on a GPU (sentence-transformers moves the model; raise
``batch_size`` to 256-1024 there); the CPU default uses torch's threads.
"""
from __future__ import annotations

import json
import time
from itertools import islice
from pathlib import Path
from typing import Iterable

import numpy as np

from dynaprag.corpus import Passage
from dynaprag.files import atomic_write_json
from dynaprag.retrieval.index_dir import passage_text

VECTORS_FILE = "vectors.f16.npy"
IDS_FILE = "ids.txt"
STATE_FILE = "encoded.json"


def encode_to_disk(passages: Iterable[Passage], folder: str | Path, total: int, *, model: str = "all-MiniLM-L6-v2",
                   batch_size: int = 64, chunk_size: int = 8_192, device: str = "cpu", progress: bool = True) -> dict:
    """Encode ``total`` passages into ``folder`` (resuming a previous run there); returns the state."""
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm

    from dynaprag.retrieval.dense import resolve_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    path = resolve_model(model)
    encoder = SentenceTransformer(path, device=device)
    dimension = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    dim = int(dimension())
    if not state:
        state = {"model": model, "dim": dim, "total": int(total), "rows": 0, "seconds": 0.0}
        np.lib.format.open_memmap(folder / VECTORS_FILE, mode="w+", dtype=np.float16, shape=(total, dim)).flush()
        (folder / IDS_FILE).write_text("")
        atomic_write_json(state_path, state)
    elif (state["model"], state["dim"], state["total"]) != (model, dim, int(total)):
        raise ValueError(f"{folder} holds an encoding of {state['total']} passages by {state['model']}; "
                         "use another folder")
    vectors = np.lib.format.open_memmap(folder / VECTORS_FILE, mode="r+")
    done = int(state["rows"])
    _truncate_ids(folder / IDS_FILE, done)
    stream = iter(passages)
    for _ in islice(stream, done):  # already encoded: read past them
        pass
    bar = tqdm(total=total, initial=done, unit=" passages", unit_scale=True, desc="dense: encode",
               disable=not progress)
    with open(folder / IDS_FILE, "a", encoding="utf-8") as ids:
        while done < total:
            chunk = list(islice(stream, min(chunk_size, total - done)))
            if not chunk:
                raise ValueError(f"the corpus ended after {done} passages; {total} were announced")
            start, cpu = time.perf_counter(), time.process_time()
            out = encoder.encode([passage_text(p) for p in chunk], batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
            vectors[done:done + len(chunk)] = out.astype(np.float16)
            vectors.flush()
            ids.write("".join(p.id + "\n" for p in chunk))
            ids.flush()
            done += len(chunk)
            state.update(rows=done, seconds=round(state["seconds"] + time.perf_counter() - start, 2),
                         cpu_seconds=round(state.get("cpu_seconds", 0.0) + time.process_time() - cpu, 2))
            atomic_write_json(state_path, state)
            bar.update(len(chunk))
    bar.close()
    state["passages_per_s"] = round(done / max(state["seconds"], 1e-9), 1)
    state["passages_per_cpu_s"] = round(done / max(state.get("cpu_seconds", 0.0), 1e-9), 1)
    atomic_write_json(state_path, state)
    return state


def _truncate_ids(path: Path, rows: int) -> None:
    """Keep the first ``rows`` ids (a killed run may have written ids of a chunk it did not record)."""
    if not path.is_file():
        path.write_text("")
        return
    with open(path, "rb") as handle:
        keep = sum(len(line) for line in islice(handle, rows))
    if keep != path.stat().st_size:
        with open(path, "r+b") as handle:
            handle.truncate(keep)


def open_vectors(folder: str | Path) -> np.ndarray:
    """The encoded matrix, memory-mapped read-only (rows beyond ``encoded.json``'s count are not yet written)."""
    return np.load(Path(folder) / VECTORS_FILE, mmap_mode="r")
