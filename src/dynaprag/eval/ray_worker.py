"""The Ray actor of a distributed evaluation: one model replica that answers shards of questions.

An :class:`EvalWorker` loads what the runs' pipeline configs name before its first shard and keeps it:
one model per (name, dtype), one retriever per retrieval config (BM25 indexes open memory-mapped,
so the actors of a node share the index's pages through the OS), one
:class:`~dynaprag.pipeline.Pipeline` per config (its prompt-prefix KV cache is computed once).
A shard is answered exactly as the single-process runner answers its questions: through
``Pipeline.answer_many`` at the run's batch size (batch 1: one slot), each answer then read by
the one scoring-time extraction. The driver (:mod:`dynaprag.eval.distributed`)
turns the answers into records; only question texts reach the actor, never gold answers.

A question that raises is returned as ``"TypeName: message"`` for that question and the shard
goes on; anything else that raises (a model or index that cannot load, a dtype that resolves
differently on this node) fails the whole call, and the driver stops the run with its message.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Sequence

#: one answered question: (position in the cell's questions still to do, Answer or error text, seconds)
Answered = tuple[int, Any, float]


def error_text(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``: what an error record keeps of an exception."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class EvalWorker:
    """A Ray actor (``ray.remote(EvalWorker)``) holding models, retrievers and pipelines across shards."""

    def __init__(self, threads: int = 1, gpus: float = 0.0):
        import torch

        torch.set_num_threads(max(1, threads))
        self.threads, self.device = threads, "cuda" if gpus > 0 else "cpu"
        self._models: dict[tuple, Any] = {}
        self._retrievers: dict[str, Any] = {}
        self._pipelines: dict[str, Any] = {}

    def where(self) -> dict:
        """This actor's process and node (the driver names them when a worker is lost)."""
        import ray

        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address()}

    def prepare(self, configs: Sequence[tuple[Any, str]]) -> dict:
        """Load the pipeline of every ``(pipe_cfg, resolved_dtype)`` now; :meth:`where` this actor runs.

        The driver calls it before the first shard and after a restart, so a worker takes shards
        only once it can answer them (a run's throughput leaves loading out), and a model that
        cannot load, or a dtype that resolves differently here, stops the run before any shard.
        """
        for pipe_cfg, resolved_dtype in configs:
            self._pipeline(pipe_cfg, resolved_dtype)
        return self.where()

    def answer(self, pipe_cfg: Any, resolved_dtype: str, items: Sequence[tuple[int, str]], batch_size: int = 1,
               forced: bool = True) -> tuple[list[Answered], float]:
        """Answer ``items`` (``(position, question)``) with ``pipe_cfg``; the answers and this process's peak RSS (MiB).

        ``resolved_dtype`` is the dtype the run's ``config.json`` records: a node where the
        config's ``dtype`` resolves to another one (``auto`` on a GPU) is refused, not mixed in.
        """
        from dynaprag.eval.records import peak_rss_mb

        pipeline = self._pipeline(pipe_cfg, resolved_dtype)
        positions = [p for p, _ in items]
        questions = [q for _, q in items]
        return self._answered(pipeline, positions, questions, batch_size, forced), round(peak_rss_mb(), 1)

    @staticmethod
    def _answered(pipeline: Any, positions: list[int], questions: list[str], batch_size: int,
                  forced: bool) -> list[Answered]:
        """Every answer of the shard through the runner's one route (batch 1: one slot)."""
        from dynaprag.eval.experiment import extracted_answers

        out = []
        with contextlib.closing(extracted_answers(pipeline, questions, batch_size, forced)) as results:
            for index, result in results:
                if isinstance(result, BaseException):
                    out.append((positions[index], error_text(result), 0.0))
                else:
                    out.append((positions[index], result, result.trace.seconds))
        return out

    def _pipeline(self, pipe_cfg: Any, resolved_dtype: str) -> Any:
        from dynaprag.config import to_dict
        from dynaprag.eval.experiment import library_progress
        from dynaprag.pipeline import Pipeline

        key = json.dumps(to_dict(pipe_cfg), sort_keys=True, default=str)
        if key in self._pipelines:
            return self._pipelines[key]
        with library_progress(False):
            lm = self._model(pipe_cfg.model, pipe_cfg.dtype)
            dtype = str(lm.dtype).removeprefix("torch.")
            if dtype != resolved_dtype:
                raise RuntimeError(f"dtype {pipe_cfg.dtype} resolves to {dtype} on this worker but to "
                                   f"{resolved_dtype} where the run started; set dtype={dtype} or "
                                   f"dtype={resolved_dtype} explicitly")
            rkey = json.dumps(to_dict(pipe_cfg.retrieval), sort_keys=True, default=str)
            if rkey not in self._retrievers:
                from dynaprag.retrieval import build_retriever

                self._retrievers[rkey] = build_retriever(pipe_cfg.retrieval, progress=False)
            pipeline = Pipeline.from_config(pipe_cfg, lm=lm, retriever=self._retrievers[rkey])
        self._pipelines[key] = pipeline
        return pipeline

    def _model(self, name: str, dtype: str) -> Any:
        if (name, dtype) not in self._models:
            from dynaprag.lm import load_model

            self._models[(name, dtype)] = load_model(name, dtype=dtype, device=self.device)
        return self._models[(name, dtype)]
