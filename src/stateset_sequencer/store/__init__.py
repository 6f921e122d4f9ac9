"""Storage: one async contract (``base``), two adapters (``sqlite``, ``postgres``)."""
