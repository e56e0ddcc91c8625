"""Serving: an OpenAI-compatible HTTP API over a :class:`~dynaprag.pipeline.Pipeline` and a trace viewer.

``create_app(pipeline)`` (in :mod:`dynaprag.serve.app`) builds the FastAPI app; the command
``dynaprag serve`` loads the pipeline once and runs it under uvicorn. FastAPI is imported only
when an app is built (install the ``serve`` extra).
"""
from __future__ import annotations


def create_app(pipeline, **kwargs):
    """See :func:`dynaprag.serve.app.create_app`."""
    from dynaprag.serve.app import create_app as _create_app

    return _create_app(pipeline, **kwargs)


__all__ = ["create_app"]
