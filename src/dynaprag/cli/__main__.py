"""``python -m dynaprag.cli``: the same command as the ``dynaprag`` console script."""
from dynaprag.cli import app

app()
