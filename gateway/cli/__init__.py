"""The ``gateway`` command: serve, migrate, manage users and databases, print settings.

``main`` is the click group; importing the command modules registers their commands on it.
"""

from gateway.cli import accounts, maintenance, records, server  # noqa: F401  (registration)
from gateway.cli.root import main

__all__ = ["main"]
