"""Many questions through the one dynamic loop at once: continuous batching of :class:`QuestionRun`.

Decoding at batch 1 is bound by reading the weights, so answering B questions together costs
little more per step than answering one (MODELS.md). :class:`BatchLoop` keeps up to
``batch_size`` questions in flight. Each is its own
:class:`~dynaprag.dynamic.loop.QuestionRun`, the same state machine
:class:`~dynaprag.dynamic.loop.DynamicLoop` runs at batch 1, with its own draft, trigger
signals, retrievals, rollbacks and knowledge slot. Every round, each run that waits for a
token gets it from one batched forward pass (:class:`~dynaprag.lm.batch.BatchStepper`); a run
that retrieves does so inside its own turn and its new prompt is prefilled alone before the
next batched pass; a run that finishes leaves and the next queued question joins.

The queue need not be fixed: ``answers(questions, more=more)`` asks ``more(free)`` for up to
``free`` late questions whenever a slot is free that the given questions do not fill (the
server passes requests that arrived while the batch runs), so a newcomer joins at the next
round instead of waiting for the whole batch to finish.

>>> loop = DynamicLoop(gen, builder, retriever, method, LoopConfig(), prefix)       # doctest: +SKIP
>>> answers = BatchLoop(loop, batch_size=8).run(questions)                          # doctest: +SKIP

What is shared and what is not: the method's components are shared (they keep no per-question
state; :class:`~dynaprag.dynamic.component.Component` ``reset`` is a no-op for all of them),
everything a component reads is per run. Look-ahead attention passes, SeaKR's samples and other
probe calls run at batch 1 inside the run that asks, while the other runs wait for the round.

Weight-changing injectors (PRAG, DyPRAG: ``Injector.may_change_weights``) change the model for
everything in the batch, so their questions run one at a time (a group of one): two questions
almost never share the same adapter set (each retrieves its own top-k documents), and
per-row LoRA deltas in one batch would need a multi-LoRA kernel the CPU path does not have.
An injector that changes weights without declaring it is refused when another run is in flight.

``Answer.trace.seconds`` is the wall time from a question joining to its answer, other
questions' work included; throughput is questions over the whole run's wall time.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from dynaprag.dynamic.loop import DynamicLoop, QuestionRun
from dynaprag.lm.batch import BatchStepper
from dynaprag.lm.generator import DecodeState
from dynaprag.trace import Answer


@dataclass
class _InFlight:
    index: int
    run: QuestionRun
    machine: object
    state: DecodeState


class BatchLoop:
    """Answers questions with ``loop``'s method, up to ``batch_size`` decoding together."""

    def __init__(self, loop: DynamicLoop, batch_size: int = 8, restack: str = "on-change"):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.loop = loop
        self.grouped = bool(getattr(loop.method.injector, "may_change_weights", False))
        self.batch_size = 1 if self.grouped else batch_size
        self.stepper = BatchStepper(loop.gen, restack=restack)
        self.feed_failures = 0  # batched feeds that raised; those rounds were fed one question at a time

    def run(self, questions: Sequence[str]) -> list[Answer]:
        """Answers in the order of ``questions``; the first error raised by any question is raised."""
        answers: list[Answer | None] = [None] * len(questions)
        for index, result in self.answers(questions):
            if isinstance(result, BaseException):
                raise result
            answers[index] = result
        return answers  # type: ignore[return-value]

    def answers(self, questions: Sequence[str], on_event=None,
                more: Callable[[int], Sequence[str]] | None = None) -> Iterator[tuple[int, Answer | Exception]]:
        """``(index, answer)`` pairs in the order questions finish; a question that raised gives its
        exception instead and the others go on (an eval run records it and continues).

        ``on_event(index, event)`` receives each question's token/retrieval/rollback events.
        ``more(free)``, if given, is asked for up to ``free`` late questions before every round
        in which a slot is free and ``questions`` are all started (for a weight-changing
        injector: after each question); the ones it returns join with the next indices
        (``len(questions)``, ``len(questions) + 1``, ...), and the answers end when nothing is
        in flight and ``more`` returns none. It is called once per such round, so it must be cheap.
        """
        queue = deque(enumerate(questions))
        joined = len(questions)
        active: list[_InFlight] = []
        gcfg = self.loop.gcfg
        try:
            while True:
                free = self.batch_size - len(active) - len(queue)
                if more is not None and free > 0:
                    for question in more(free):
                        queue.append((joined, question))
                        joined += 1
                if not (queue or active):
                    break
                while queue and len(active) < self.batch_size:
                    index, question = queue.popleft()
                    sink = None if on_event is None else (lambda e, i=index: on_event(i, e))
                    run = self.loop.begin(question, sink)
                    machine = run.decode()
                    try:
                        state = next(machine)
                    except StopIteration as done:
                        yield index, done.value
                        continue
                    except Exception as exc:  # noqa: BLE001 - reported per question
                        yield index, exc
                        continue
                    active.append(_InFlight(index, run, machine, state))
                    self._check_weights(active)
                if not active:
                    continue
                try:
                    self.stepper.feed([a.state for a in active], gcfg)
                except Exception:  # noqa: BLE001 - each question's own step below feeds it alone and says which failed
                    self.feed_failures += 1
                outs: list = []
                for a in active:
                    try:
                        outs.append(self.loop.gen.step(a.state, gcfg))
                    except Exception as exc:  # noqa: BLE001 - goes back into that question's run
                        outs.append(exc)
                still: list[_InFlight] = []
                for a, out in zip(active, outs):
                    try:
                        a.state = a.machine.throw(out) if isinstance(out, BaseException) else a.machine.send(out)
                        still.append(a)
                    except StopIteration as done:
                        yield a.index, done.value
                    except Exception as exc:  # noqa: BLE001
                        yield a.index, exc
                active = still
                self._check_weights(active)
        finally:  # a consumer that stops early (an interrupted eval) leaves no weights applied
            for a in active:
                a.machine.close()

    @staticmethod
    def _check_weights(active: list[_InFlight]) -> None:
        """Refuse an undeclared weight change while several questions decode (a programming error)."""
        if len(active) > 1 and any(a.run.weighted for a in active):
            for a in active:
                a.machine.close()
            raise RuntimeError("an injector changed the model's weights while other questions were decoding; "
                               "declare `may_change_weights = True` on it so its questions run one at a time")
