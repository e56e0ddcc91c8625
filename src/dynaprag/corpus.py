"""Passages: the unit every retriever returns and every injector consumes.

Readers (JSONL, DPR ``psgs_w100.tsv``) live in :mod:`dynaprag.corpora` so this module stays a
dependency-free type that all layers can import.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Passage:
    """A retrievable unit of text. ``extra`` keeps any other fields of the source record."""

    id: str
    title: str
    text: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def content_hash(self) -> str:
        """A stable hash of title and text: keys parametric adapters to the document's content."""
        return hashlib.sha256(f"{self.title}\n{self.text}".encode("utf-8")).hexdigest()

    def as_context(self) -> str:
        """How a passage is shown to the model in a prompt."""
        return f"{self.title}: {self.text}" if self.title else self.text
