"""Test support shared by ``tests/`` and ``bench/``: a real PostgreSQL server (``pg``), a
real sequencer process (``serverproc``), event and key builders (``kit``), the many-stream
populate over HTTP (``loadkit``), a real anvil node from node_modules (``anvil``), our
registry on an in-process eth-tester chain (``evm``) and a TCP gate that takes a node away
and brings it back (``gate``). Nothing here is used by the service; it needs the ``test``
extra (pytest, eth-tester) and is installed with the package so that the benchmarks run
without ``PYTHONPATH`` tricks."""
