"""Turning decoding events into an append-only text stream that never sends a discarded token.

Dynamic methods (FLARE, DRAGIN, ...) draft tokens, then may retrieve and *roll back*: the
draft after some position is discarded and regenerated with the new knowledge. The OpenAI
delta protocol can only append, so a streamed token cannot be taken back. The strategy is to
stream only text that can no longer change:

* **Retrieval points.** A ``retrieval`` event at position ``p`` (or a ``rollback`` to ``p``)
  makes tokens ``0..p-1`` final: the answer before a retrieval becomes part of the prompt and is
  never revised.
* **Judged sentences.** Every trigger decides at a sentence end and cuts, at most, back to the
  start of that sentence (:mod:`dynaprag.dynamic.triggers`; the loop emits the rollback before
  the next token). So when the first token of a new sentence arrives without a rollback, the
  finished sentence has passed its check and is final.
* **Methods that never roll back** (``wo-rag``, ``sr-rag``, fixed-interval and per-sentence
  retrieval, SeaKR) commit every token as it arrives.
* **The final text is what the loop returns**: the draft cut before a stop string and
  stripped (:func:`dynaprag.dynamic.loop.clean`). So committed text is held back while it ends
  in whitespace or in a possible beginning of a stop string, and leading whitespace is not
  sent; at the end the rest of the final text is sent. If the final text ever failed to start
  with what was sent, the mismatch is recorded in the trace's notes rather than hidden.

Result: the concatenated deltas equal the non-streamed answer; dynamic methods stream sentence
by sentence, the others token by token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


def _sentence_end(text: str) -> bool:
    from dynaprag.dynamic.text import is_sentence_end

    return is_sentence_end(text)


def safe_prefix(text: str, stops: Sequence[str]) -> str:
    """The part of ``text`` that the final answer is sure to start with (see module docstring).

    >>> safe_prefix(" He was born.\\n", ["\\n\\n", "Question:"])
    'He was born.'
    >>> safe_prefix(" It is Ulm. Quest", ["Question:"])
    'It is Ulm.'
    """
    cut = min((text.index(s) for s in stops if s in text), default=len(text))
    text = text[:cut]
    for n in range(min(len(text), max((len(s) for s in stops), default=0)), 0, -1):
        if any(s.startswith(text[-n:]) for s in stops):
            text = text[:-n]
            break
    return text.strip()


@dataclass
class CommitStream:
    """Feed it the pipeline's ``on_event`` dicts; it returns the text that became final.

    >>> s = CommitStream(may_roll_back=True, stops=())
    >>> [s.feed({"type": "token", "text": t}) for t in [" Paris", "."]]
    ['', '']
    >>> s.feed({"type": "rollback", "keep_tokens": 0}), s.feed({"type": "token", "text": " Lyon"})
    ('', '')
    >>> s.finish("Lyon")
    'Lyon'
    """

    may_roll_back: bool = True
    stops: Sequence[str] = ()
    tokens: list[str] = field(default_factory=list)
    committed: int = 0  # tokens that can no longer be rolled back
    sent_text: str = ""
    notes: list[str] = field(default_factory=list)

    def feed(self, event: dict) -> str:
        """Apply one event; return the newly sendable text ('' if none)."""
        kind = event.get("type")
        if kind == "token":
            if self.may_roll_back and self.tokens and _sentence_end("".join(self.tokens)):
                self.committed = len(self.tokens)  # the finished sentence passed its check
            self.tokens.append(str(event.get("text", "")))
            if not self.may_roll_back:
                self.committed = len(self.tokens)
        elif kind == "rollback":
            keep = int(event.get("keep_tokens", 0))
            if keep < self.committed:
                self.notes.append(f"stream: rollback to token {keep} after {self.committed} tokens were "
                                  "committed; the final text is authoritative")
                self.committed = keep
            del self.tokens[keep:]
        elif kind == "retrieval":
            self.committed = max(self.committed, min(int(event.get("position", 0)), len(self.tokens)))
        return self._send()

    def _send(self) -> str:
        ready = safe_prefix("".join(self.tokens[: self.committed]), self.stops)
        if len(ready) <= len(self.sent_text) or not ready.startswith(self.sent_text):
            return ""
        delta = ready[len(self.sent_text):]
        self.sent_text = ready
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of the final answer that has not been sent yet."""
        if not final_text.startswith(self.sent_text):
            self.notes.append("stream: the streamed prefix differs from the final answer "
                              f"({self.sent_text!r} vs {final_text[:len(self.sent_text)]!r})")
            return ""
        rest = final_text[len(self.sent_text):]
        self.sent_text = final_text
        return rest
