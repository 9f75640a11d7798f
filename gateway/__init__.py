"""HTTP app, routes, auth, CLI and wiring of the replication gateway."""

__version__ = "0.1.0"
