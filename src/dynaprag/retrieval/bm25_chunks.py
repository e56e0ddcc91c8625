"""Phase 1 of the out-of-core BM25 build: the corpus in chunks, each one's postings on disk.

A chunk of ``chunk_size`` passages is appended to the passage store and analysed
(:class:`~dynaprag.retrieval.analysis.Analyzer`); its postings are written to
``chunks/NNNNNN/`` as arrays sorted by (term, passage):

- ``terms.txt``: the chunk's distinct terms, sorted, one per line (terms never hold a newline);
- ``term_ptr.npy`` (int64): where each term's postings start; ``docs.npy`` (int32, row within
  the chunk) and ``tfs.npy`` (uint16, or uint32 when a count needs it): one posting each;
- ``doc_lens.npy`` (int32): terms per passage, bm25s's document length;
- ``store_lens.npy`` (int64): bytes of each passage's line in ``passages.jsonl``.

Memory stays bounded by one chunk, whatever the corpus size. Each chunk's folder is written
under a temporary name and renamed whole, then the build manifest (``build.json``, written
atomically) lists it with the store's length after it. The manifest is the truth: after a
``kill -9`` the next run drops chunk folders it does not list, truncates ``passages.jsonl``
to the listed length, skips the passages already done, and goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from json.encoder import encode_basestring as _quote
from typing import Callable, Iterable, Iterator

import numpy as np

from dynaprag.corpus import Passage
from dynaprag.files import atomic_write_json
from dynaprag.retrieval.analysis import Analyzer
from dynaprag.retrieval.index_dir import passage_text
from dynaprag.retrieval.store import PASSAGES

MANIFEST = "build.json"
CHUNKS = "chunks"


@dataclass
class BuildManifest:
    """What a build folder holds so far; ``settings`` must match for a resume to reuse it."""

    settings: dict
    chunk_size: int
    chunks: list[dict] = field(default_factory=list)  # {"passages", "store_bytes", "digest", ...}
    corpus_done: bool = False
    digest: str = ""  # the corpus's PassageDigest, once it has been read to the end
    merge: dict = field(default_factory=dict)
    seconds: float = 0.0  # build time summed over every run that worked on this folder
    runs: int = 0

    def __post_init__(self) -> None:
        self._clock = time.monotonic()

    @property
    def passages(self) -> int:
        return sum(c["passages"] for c in self.chunks)

    @property
    def store_bytes(self) -> int:
        return self.chunks[-1]["store_bytes"] if self.chunks else 0

    def save(self, folder: Path) -> None:
        now = time.monotonic()
        self.seconds, self._clock = self.seconds + now - self._clock, now
        atomic_write_json(Path(folder) / MANIFEST, {k: v for k, v in self.__dict__.items() if not k.startswith("_")})

    @classmethod
    def load_or_new(cls, folder: Path, settings: dict, chunk_size: int) -> "BuildManifest":
        """The folder's manifest when it was made with the same settings, else a fresh one."""
        path = Path(folder) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(settings=settings, chunk_size=chunk_size)
        if data.get("settings") != settings or data.get("chunk_size") != chunk_size:
            return cls(settings=settings, chunk_size=chunk_size)
        return cls(**data)


def chunk_dir(folder: Path, index: int) -> Path:
    return Path(folder) / CHUNKS / f"{index:06d}"


def reconcile(folder: Path, manifest: BuildManifest) -> None:
    """Make the folder agree with the manifest: drop unlisted chunks, truncate the store."""
    folder = Path(folder)
    chunks = folder / CHUNKS
    chunks.mkdir(parents=True, exist_ok=True)
    listed = {chunk_dir(folder, i).name for i in range(len(manifest.chunks))}
    for entry in chunks.iterdir():
        if entry.name not in listed:
            shutil.rmtree(entry, ignore_errors=True)
    store = folder / PASSAGES
    with open(store, "ab") as handle:
        handle.truncate(manifest.store_bytes)


class PassageDigest:
    """A running SHA-256 of the passages (id, title, text) in order: the corpus's checksum.

    Format-independent (the same passages as TSV or JSONL give the same digest), and it covers
    every passage, the ones a resumed build skips included.
    """

    def __init__(self):
        self._hash = hashlib.sha256()
        self.count = 0

    def update(self, p: Passage) -> None:
        record = json.dumps([p.id, p.title, p.text], ensure_ascii=False)
        self._hash.update(f"{len(record)}:{record}".encode("utf-8"))
        self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _postings(term_ids: np.ndarray, doc_lens: np.ndarray, rank: np.ndarray, n_terms: int):
    """(term_ptr, docs, tfs) sorted by (term rank, doc) from the chunk's term occurrences."""
    docs_of_tokens = np.repeat(np.arange(len(doc_lens), dtype=np.int64), doc_lens)
    keys = (rank[term_ids] << 32) | docs_of_tokens
    keys, counts = np.unique(keys, return_counts=True)
    term_ptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys >> 32, minlength=n_terms), out=term_ptr[1:])
    tf_dtype = np.uint16 if counts.max(initial=0) < 2**16 else np.uint32
    return term_ptr, (keys & 0xFFFFFFFF).astype(np.int32), counts.astype(tf_dtype)


def store_line(p: Passage) -> bytes:
    """A passage's line in ``passages.jsonl``: the bytes ``PassageStore.write`` writes, faster."""
    if p.extra:
        return json.dumps({"id": p.id, "title": p.title, "text": p.text, **p.extra},
                          ensure_ascii=False).encode("utf-8") + b"\n"
    return f'{{"id": {_quote(p.id)}, "title": {_quote(p.title)}, "text": {_quote(p.text)}}}\n'.encode("utf-8")


def append_to_store(passages: list[Passage], store) -> np.ndarray:
    """Append ``passages`` to the open store file (flushed, fsynced); returns each line's length."""
    lines = [store_line(p) for p in passages]
    store.write(b"".join(lines))
    store.flush()
    os.fsync(store.fileno())
    return np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))


def index_chunk(folder: Path, index: int, texts: list[str], analyzer: Analyzer, store_lens: np.ndarray) -> dict:
    """Analyse ``texts`` and write chunk ``index``'s folder (under a temporary name, renamed whole)."""
    term_ids, doc_lens, vocabulary = analyzer.analyze_chunk(texts)
    present = np.unique(term_ids)
    terms = [vocabulary[i] for i in present.tolist()]
    order = sorted(range(len(terms)), key=terms.__getitem__)
    rank = np.zeros(len(vocabulary), dtype=np.int64)
    rank[present[order]] = np.arange(len(order))
    term_ptr, docs, tfs = _postings(term_ids, doc_lens, rank, len(order))
    final = chunk_dir(folder, index)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "terms.txt").write_text("\n".join(terms[i] for i in order), encoding="utf-8")
    for name, arr in (("term_ptr", term_ptr), ("docs", docs), ("tfs", tfs), ("doc_lens", doc_lens),
                      ("store_lens", store_lens)):
        np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
    os.replace(tmp, final)
    return {"tokens": int(doc_lens.sum()), "postings": int(len(docs)), "terms": len(order)}


def write_chunk(folder: Path, index: int, passages: list[Passage], analyzer: Analyzer, store) -> dict:
    """Append ``passages`` to the ``store`` and write chunk ``index`` (one process does both)."""
    store_lens = append_to_store(passages, store)
    return {"passages": len(passages), "store_bytes": store.tell(),
            **index_chunk(folder, index, [passage_text(p) for p in passages], analyzer, store_lens)}


_WORKER_ANALYZERS: dict[tuple, Analyzer] = {}


def _index_chunk_job(folder: Path, index: int, texts: list[str], analysis: tuple, store_lens: np.ndarray) -> dict:
    """:func:`index_chunk` in a worker process, with that process's (cached) analyser."""
    analyzer = _WORKER_ANALYZERS.get(analysis)
    if analyzer is None:
        analyzer = _WORKER_ANALYZERS[analysis] = Analyzer(*analysis)
    return index_chunk(folder, index, texts, analyzer, store_lens)


def read_chunk_terms(folder: Path, index: int) -> list[str]:
    return (chunk_dir(folder, index) / "terms.txt").read_text(encoding="utf-8").split("\n")


def batched(passages: Iterable[Passage], size: int) -> Iterator[list[Passage]]:
    batch: list[Passage] = []
    for p in passages:
        batch.append(p)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_chunks(passages: Iterable[Passage], folder: Path, manifest: BuildManifest, analyzer: Analyzer,
                 digest: PassageDigest, on_chunk: Callable[[int, int], None] | None = None,
                 workers: int = 1) -> None:
    """Run phase 1 to the end of ``passages``, resuming after the manifest's chunks.

    The first ``manifest.passages`` passages are read (and digested) but not redone.
    ``on_chunk(chunk_index, passages_done)`` is called after each committed chunk. With
    ``workers`` > 1, chunks are analysed in that many processes while this one reads on and
    appends to the store; chunks are still committed in order.
    """
    folder = Path(folder)
    if manifest.corpus_done:
        return
    reconcile(folder, manifest)
    skip = manifest.passages
    stream = iter(passages)
    for p in stream:
        if digest.count >= skip:
            stream = _prepend(p, stream)
            break
        digest.update(p)
    if digest.count < skip or (skip and digest.hexdigest() != manifest.chunks[-1].get("digest")):
        raise ValueError(f"the corpus is not the one the interrupted build in {folder} was reading (its first "
                         f"{skip} passages differ); remove that folder to start over")

    def commit(entry: dict) -> None:
        manifest.chunks.append(entry)
        manifest.save(folder)
        if on_chunk is not None:
            on_chunk(len(manifest.chunks) - 1, manifest.passages)

    with open(folder / PASSAGES, "ab") as store:
        if workers <= 1:
            for batch in batched(stream, manifest.chunk_size):
                for p in batch:
                    digest.update(p)
                entry = write_chunk(folder, len(manifest.chunks), batch, analyzer, store)
                commit({**entry, "digest": digest.hexdigest()})  # the corpus up to here: the resume check
        else:
            _build_chunks_in_pool(stream, folder, manifest, analyzer, digest, store, commit, workers)
    manifest.corpus_done, manifest.digest = True, digest.hexdigest()
    manifest.save(folder)


def _build_chunks_in_pool(stream, folder, manifest, analyzer, digest, store, commit, workers: int) -> None:
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    analysis = (analyzer.stemmer_name, analyzer.stopwords_name)
    pending: deque = deque()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for batch in batched(stream, manifest.chunk_size):
            for p in batch:
                digest.update(p)
            store_lens = append_to_store(batch, store)
            index = len(manifest.chunks) + len(pending)
            future = pool.submit(_index_chunk_job, folder, index, [passage_text(p) for p in batch], analysis,
                                 store_lens)
            pending.append((future, {"passages": len(batch), "store_bytes": store.tell(),
                                     "digest": digest.hexdigest()}))
            while len(pending) >= workers:
                future, entry = pending.popleft()
                commit({**entry, **future.result()})
        while pending:
            future, entry = pending.popleft()
            commit({**entry, **future.result()})


def _prepend(first: Passage, rest: Iterator[Passage]) -> Iterator[Passage]:
    yield first
    yield from rest
