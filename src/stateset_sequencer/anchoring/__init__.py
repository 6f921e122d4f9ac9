"""Anchoring VES commitments on an EVM chain through the SetRegistry contract.

``faults`` is light; ``contract``, ``chain`` and ``anchorer`` bring in the Ethereum
libraries (through ``ethereum``, which keeps the recursion limit).
"""
