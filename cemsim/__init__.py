"""cemsim: a hardware/algorithm co-design simulator for compute-enabled memory (CEM)."""

__version__ = "0.1.0"
