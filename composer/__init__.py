"""composer: compose files run as Linux-namespace containers, with no Docker engine."""

__version__ = "0.1.0"

from composer import dataclass_cache  # before any module of composer defines a dataclass

dataclass_cache.install()
