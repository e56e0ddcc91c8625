"""Parity tests against the reference implementations' outputs in ``../shared/parity/``.

A package so that its ``conftest.py`` and helpers do not collide with ``tests/conftest.py``.
"""
