"""composer: compose files run as Linux-namespace containers, with no Docker engine."""

__version__ = "0.1.0"
