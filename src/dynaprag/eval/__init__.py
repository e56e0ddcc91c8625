"""Evaluation harness: datasets, metrics, a resumable runner and reports.

``dynaprag eval`` runs one method on one dataset into a run folder (one JSONL record per
question, ``summary.json``, the resolved ``config.json``); ``dynaprag report`` tables and plots
any number of run folders. Submodules are imported on use so ``metrics`` stays dependency-free.
"""
