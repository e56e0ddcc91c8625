"""Offline encoding on a Ray cluster: augmentation + LoRA training fanned out over workers.

PRAG's offline phase is embarrassingly parallel over documents (each adapter depends only on
its own document and the shared initialisation). Each Ray actor loads the model once and
encodes the documents it is handed; the driver writes every finished adapter into the same
:class:`~dynaprag.parametric.adapters.AdapterStore` as results arrive, so a killed run keeps
what finished and a re-run skips it. Adapters travel back as safetensors bytes (no pickled
tensors; a document whose augmentation failed comes back without one and is recorded as
skipped). The same code runs on a local cluster or a real one (``address="ray://head:10001"``),
started or joined by :func:`dynaprag.cluster.ray_session`; workers need the model reachable
under the same name.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from dynaprag.cluster import ClusterConfig, ray_session
from dynaprag.corpus import Passage
from dynaprag.parametric.adapters import AdapterStore
from dynaprag.parametric.encode import EncodeConfig, EncodeReport, pending_passages

@dataclass
class RayConfig:
    """Where and how wide to run."""

    address: str | None = field(default=None, metadata={"help": "Ray address (ray://head:10001, auto); None = a new local cluster"})
    workers: int = field(default=2, metadata={"help": "encoding actors (each loads the model once)"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs reserved per actor (also its torch threads)"})
    startup_timeout_s: int = field(default=120, metadata={"help": "seconds a local cluster may take to start"})

    def cluster(self) -> ClusterConfig:
        """The cluster to join, or a local one with a CPU for every actor."""
        return ClusterConfig(address=self.address, num_cpus=math.ceil(self.workers * self.cpus_per_worker),
                             startup_timeout_s=self.startup_timeout_s)


class EncodeWorker:
    """A Ray actor: one loaded model and a peft session, encoding a batch of documents per call."""

    def __init__(self, model: str, dtype: str, config: dict, threads: int):
        import torch

        from dynaprag.config import from_dict
        from dynaprag.lm import load_model
        from dynaprag.parametric.encode import encoding_session

        torch.set_num_threads(max(1, threads))
        self.config = from_dict(EncodeConfig, config)
        self.lm = load_model(model, dtype=dtype)
        self._session = encoding_session(self.lm, self.config)
        self.encoder, self.augmenter = self._session.__enter__()

    def fingerprint(self) -> str:
        return self.lm.fingerprint

    def encode(self, docs: list[dict]) -> list[tuple[str, bytes | None, dict]]:
        from safetensors.torch import save

        from dynaprag.parametric.encode import encode_many

        passages = [Passage(d["id"], d["title"], d["text"]) for d in docs]
        out = []
        for passage, (adapter, info) in zip(passages, encode_many(self.lm, passages, self.config, self.encoder,
                                                                  self.augmenter)):
            info["worker_pid"], info["worker_niceness"] = os.getpid(), os.nice(0)
            out.append((passage.content_hash, None if adapter is None else save(adapter), info))
        return out


def even_batches(items: list, workers: int, most: int) -> list[list]:
    """``items`` in consecutive batches of at most ``most``, as many as a whole number of rounds of
    ``workers`` batches, their sizes differing by at most one.

    Why: augmentation is compute-bound on a CPU (a decoding row costs about the same at batch 4
    as at 8), so a worker's time is about its number of rows. Cutting 12 documents into 4 + 4 + 4
    for 2 workers leaves one worker idle while the other decodes the last 4; 3 + 3 + 3 + 3 ends
    both after 6.
    """
    if not items:
        return []
    workers, most = max(1, workers), max(1, most)
    count = workers * -(-len(items) // (workers * most))
    count = min(count, len(items))
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return out


def encode_with_ray(model: str, dtype: str, fingerprint: str, passages: Iterable[Passage], store: AdapterStore,
                    config: EncodeConfig | None = None, ray_config: RayConfig | None = None,
                    progress: Callable[[Passage, str], None] | None = None) -> EncodeReport:
    """Encode the passages that have no finished adapter in ``store`` on Ray actors.

    Ray starts only when something is left to encode; a cluster this call started is stopped
    when it returns (:func:`~dynaprag.cluster.ray_session`), one it found running is left so.
    Raises :class:`~dynaprag.cluster.RayStartError` (one line) when no cluster can be had.
    """
    config, ray_config = config or EncodeConfig(), ray_config or RayConfig()
    report, todo = pending_passages(passages, store, progress)
    if not todo:
        return report
    with ray_session(ray_config.cluster()) as ray:
        _encode_on_actors(ray, model, dtype, fingerprint, todo, store, config, ray_config, report, progress)
    return report


def _encode_on_actors(ray, model: str, dtype: str, fingerprint: str, todo: list[Passage], store: AdapterStore,
                      config: EncodeConfig, ray_config: RayConfig, report: EncodeReport, progress) -> None:
    """Load the model on the actors, hand them even batches as they free up, store what comes back."""
    from safetensors.torch import load

    actor_cls = ray.remote(num_cpus=ray_config.cpus_per_worker)(EncodeWorker)
    n = max(1, min(ray_config.workers, len(todo)))
    actors = [actor_cls.remote(model, dtype, asdict(config), int(ray_config.cpus_per_worker)) for _ in range(n)]
    try:
        remote_fps = set(ray.get([a.fingerprint.remote() for a in actors]))
        if remote_fps != {fingerprint}:
            raise RuntimeError(f"Ray workers loaded model(s) {sorted(remote_fps)}, but the store is for "
                               f"{fingerprint}: make the same model available on every node")
        queue = list(reversed(even_batches(todo, n, config.augment.batch_docs)))
        pending: dict = {}
        for actor in actors:
            if queue:
                batch = queue.pop()
                pending[actor.encode.remote([_doc(p) for p in batch])] = (actor, batch)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor, batch = pending.pop(done[0])
            for passage, (content_hash, blob, info) in zip(batch, ray.get(done[0])):
                report.record(store, content_hash, None if blob is None else load(blob), info)
                if progress:
                    progress(passage, "encoded" if blob is not None else "unaugmentable")
            if queue:
                nxt = queue.pop()
                pending[actor.encode.remote([_doc(p) for p in nxt])] = (actor, nxt)
    finally:
        for actor in actors:
            ray.kill(actor)


def _doc(passage: Passage) -> dict:
    return {"id": passage.id, "title": passage.title, "text": passage.text}
