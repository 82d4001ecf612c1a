"""HAVANA reproduction: re-ID datasets, baseline extractors, the HAVANA head, evaluation and the paper's tables."""

__version__ = "0.1.0"
