"""StateSet Sequencer: a verifiable event sequencer speaking VES v1 and v2."""

__version__ = "0.1.0"
