"""Network interfaces over the sequencer services."""
