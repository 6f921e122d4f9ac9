"""``python -m stateset_sequencer`` is ``sequencer-cli``."""

from .cli import main

main()
