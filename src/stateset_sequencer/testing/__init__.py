"""Test support shared by ``tests/`` and ``bench/``: a real PostgreSQL server (``pg``), a
real sequencer process (``serverproc``), event and key builders (``kit``) and the
many-stream populate over HTTP (``loadkit``). Nothing here is used by the service; it
needs the ``test`` extra (pytest) and is installed with the package so that the
benchmarks run without ``PYTHONPATH`` tricks."""
