"""Pure VES protocol core (v1 and v2 signatures).

Every hash, signature, proof and encoding of the protocol is computed here and nowhere
else. Nothing in this package does I/O, reads a clock or keeps global mutable state.
"""
