"""The agent side: what runs beside an agent that signs VES events and sends them to a
sequencer (its keys, its outbox, its sync). Imports ``ves/`` and ``client/`` only, never
the server's ``store/``, ``sequencer/``, ``runtime/`` or ``api/``."""
