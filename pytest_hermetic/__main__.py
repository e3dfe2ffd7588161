"""`python -m pytest_hermetic`: the `hermetic` command."""

from .cli import console

console()
