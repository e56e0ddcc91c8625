"""Elasticsearch / OpenSearch: query an existing BM25 index, e.g. the DRAGIN/PRAG Wikipedia one.

The DRAGIN and PRAG reference code index the 21M DPR passages (``psgs_w100.tsv``) through
BEIR's ``ElasticSearch`` helper into an index named ``wiki`` whose documents hold ``title``
and ``txt`` (the passage id is the document ``_id``), and query it with a ``multi_match``
``best_fields`` query over both fields with ``tie_breaker`` 0.5. :func:`request_body` builds
that same query, so hits match the reference runs; the server's BM25 (Lucene, k1=1.2,
b=0.75 unless the index says otherwise) does the scoring.

Two transports: ``client`` uses the official ``elasticsearch`` package (its major version
must match the server's), ``http`` posts NDJSON to ``_msearch`` with the standard library,
which works against Elasticsearch 7-9 and OpenSearch alike. Credentials go in the URL
(``https://user:pass@host:9200``) or ``$DYNAPRAG_ES_API_KEY``.
"""
from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request

from dynaprag.corpus import Passage
from dynaprag.retrieval.base import Hit, Retriever, check_k
from dynaprag.retrieval.config import BACKENDS, RetrieverConfig

TRANSPORTS = ("client", "http")


def request_body(query: str, k: int, *, title_field: str = "title", text_field: str = "txt",
                 tie_breaker: float = 0.5) -> dict:
    """The search body for one query: ``multi_match`` best_fields over title and text."""
    return {"size": k, "_source": [title_field, text_field],
            "query": {"multi_match": {"query": query, "type": "best_fields",
                                      "fields": [title_field, text_field], "tie_breaker": tie_breaker}}}


def msearch_ndjson(index: str, bodies: list[dict]) -> str:
    """The ``_msearch`` payload: a header line naming the index, then the body, per query."""
    lines = []
    for body in bodies:
        lines += [json.dumps({"index": index}), json.dumps(body, ensure_ascii=False)]
    return "\n".join(lines) + "\n"


class ElasticRetriever(Retriever):
    """Batched BM25 search (one ``_msearch`` per batch) against an existing index."""

    name = "elastic"

    def __init__(self, url: str, index: str = "wiki", *, title_field: str = "title", text_field: str = "txt",
                 tie_breaker: float = 0.5, transport: str = "client", timeout: float = 60.0):
        if transport not in TRANSPORTS:
            raise ValueError(f"es_transport must be one of {TRANSPORTS}, got {transport!r}")
        self.url, self.index = url.rstrip("/"), index
        self.title_field, self.text_field, self.tie_breaker = title_field, text_field, tie_breaker
        self.transport, self.timeout = transport, timeout
        self._client = None

    @property
    def fingerprint(self) -> str:
        host = urllib.parse.urlsplit(self.url)
        return (f"elastic:{host.hostname}:{host.port}/{self.index}:{self.title_field},{self.text_field}:"
                f"tb={self.tie_breaker}")

    def bodies(self, queries: list[str], k: int) -> list[dict]:
        return [request_body(q, k, title_field=self.title_field, text_field=self.text_field,
                             tie_breaker=self.tie_breaker) for q in queries]

    def _responses_client(self, bodies: list[dict]) -> list[dict]:
        if self._client is None:
            try:
                from elasticsearch import Elasticsearch
            except ImportError:
                raise ImportError("the elastic backend needs the 'elastic' extra: "
                                  "pip install 'dynaprag[elastic]' (or es_transport=http)") from None
            api_key = os.environ.get("DYNAPRAG_ES_API_KEY")
            self._client = Elasticsearch(self.url, api_key=api_key, request_timeout=self.timeout)
        searches = []
        for body in bodies:
            searches += [{"index": self.index}, body]
        return dict(self._client.msearch(searches=searches))["responses"]

    def _responses_http(self, bodies: list[dict]) -> list[dict]:
        parts = urllib.parse.urlsplit(self.url)
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path + "/_msearch", "", ""))
        headers = {"Content-Type": "application/x-ndjson"}
        if parts.username:
            token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        elif os.environ.get("DYNAPRAG_ES_API_KEY"):
            headers["Authorization"] = "ApiKey " + os.environ["DYNAPRAG_ES_API_KEY"]
        request = urllib.request.Request(url, data=msearch_ndjson(self.index, bodies).encode("utf-8"),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())["responses"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{netloc}/{self.index}: HTTP {exc.code}: {exc.read()[:300]!r}") from None

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        check_k(k)
        if not queries:
            return []
        bodies = self.bodies(list(queries), k)
        responses = (self._responses_client if self.transport == "client" else self._responses_http)(bodies)
        out = []
        for response in responses:
            if "error" in response:
                raise RuntimeError(f"Elasticsearch index {self.index!r}: {response['error']}")
            hits = []
            for h in response["hits"]["hits"]:
                src = h.get("_source") or {}
                hits.append(Hit(Passage(id=str(h["_id"]), title=src.get(self.title_field) or "",
                                        text=src.get(self.text_field) or ""), float(h["_score"] or 0.0)))
            out.append(hits)
        return out


def build(config: RetrieverConfig, progress: bool = True) -> ElasticRetriever:
    """Connect to ``es_url`` (or ``$DYNAPRAG_ES_URL``); the index must already exist."""
    url = config.es_url or os.environ.get("DYNAPRAG_ES_URL")
    if not url:
        raise ValueError("the elastic backend needs es_url (or $DYNAPRAG_ES_URL), e.g. http://localhost:9200")
    return ElasticRetriever(url, config.es_index, title_field=config.es_title_field,
                            text_field=config.es_text_field, tie_breaker=config.es_tie_breaker,
                            transport=config.es_transport)


BACKENDS.register("elastic", build)
