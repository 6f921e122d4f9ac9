"""StateSet Sequencer: a verifiable event sequencer speaking VES v1 and v2."""

import sys

__version__ = "0.1.0"

# The interpreter's recursion limit as the process started, read before any of our modules
# can import a library that raises it (anchoring/ethereum.py puts it back).
RECURSION_LIMIT = sys.getrecursionlimit()
