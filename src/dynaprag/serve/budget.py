"""What one request may cost the server: a token budget and an estimate of its working memory.

Why: a legal 7 KB request (2,300 CJK characters, ~7k tokens) once grew a server to 18.7 GB
(issue 27). Decoding memory grows with the sequence: every layer's KV cache holds each token,
a forward pass holds activations per token, and some methods hold several copies of the answer's
cache at once (SeaKR decodes its 20 samples as one batch over a 21-fold copy). Attention passes
are bounded by design (:mod:`dynaprag.lm.attention`); what remains linear in tokens is
estimated here *before decoding starts*, so a request that cannot fit is refused with a 413 that
names the limit instead of taking the process down.

The estimate, for ``T`` tokens (prompt prefix + question + ``k`` passages + answer budget) and
``c`` cache copies (1 + what the method's components declare, :func:`cache_copies`)::

    bytes = T · (c · kv_bytes_per_token + work_bytes_per_token)

``kv_bytes_per_token`` is exact, from the model's config (2 · layers · kv_heads · head_dim ·
bytes per value); ``work_bytes_per_token`` covers the activations of a forward pass and the
float32 signals read from it, ``work_factor · (hidden + intermediate) · 4`` bytes, with
``work_factor`` = 48, set from the long-question runs of ``bench/serve.py``: DRAGIN's memory grew
by ~330 KB per question token on the 135M model in bfloat16 (its look-ahead forks and attention
passes), which 24 did not cover; 48 leaves a margin (the results file reports every measured
peak next to its estimate).
"""
from __future__ import annotations

from dataclasses import dataclass

#: assumed tokens of one retrieved passage (Wikipedia paragraphs of the shared corpus average
#: well under this; a corpus of longer passages needs a larger value)
PASSAGE_TOKENS = 256


@dataclass(frozen=True)
class MemoryModel:
    """Per-token memory of one loaded model (see the module docstring)."""

    kv_bytes_per_token: int
    work_bytes_per_token: int

    @classmethod
    def of(cls, lm, work_factor: float = 48.0) -> "MemoryModel":
        config = lm.model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        layers = int(text.num_hidden_layers)
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        value_bytes = next(lm.model.parameters()).element_size()
        hidden = int(text.hidden_size)
        inter = int(getattr(text, "intermediate_size", None) or 4 * hidden)
        return cls(kv_bytes_per_token=2 * layers * kv_heads * head_dim * value_bytes,
                   work_bytes_per_token=int(work_factor * (hidden + inter) * 4))

    def request_bytes(self, tokens: int, copies: int = 1) -> int:
        """Estimated working memory of a request of ``tokens`` tokens holding ``copies`` caches."""
        return int(tokens * (max(1, copies) * self.kv_bytes_per_token + self.work_bytes_per_token))


def cache_copies(method) -> int:
    """How many copies of the answer's KV cache ``method`` holds at once: 1 + the most any of its
    components declares (``kv_copies()``; the components run one after another, so the largest counts)."""
    extra = [int(c()) for _label, comp in method.components() if callable(c := getattr(comp, "kv_copies", None))]
    return 1 + max(extra, default=0)


def request_tokens(prefix_tokens: int, question_tokens: int, k: int, answer_tokens: int,
                   passage_tokens: int = PASSAGE_TOKENS) -> int:
    """Tokens a request's longest sequence may reach: prompt prefix, question, ``k`` passages, answer."""
    return prefix_tokens + question_tokens + k * passage_tokens + answer_tokens
