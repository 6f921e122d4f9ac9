"""The Ethereum libraries, with the interpreter's recursion limit put back after them.

py_ecc (under web3 and eth-account) raises the limit to 100,000 when imported. Our guards
against hostile nesting (a JSON body, a payload to canonicalize) end in a RecursionError
at the default limit; at 100,000 frames a body of nested arrays would overflow the C stack
and kill the process instead of being answered 400. Every module here that uses web3
imports this one after its own imports, so the limit is back whichever came first.
"""

import sys

import eth_account  # noqa: F401
import web3  # noqa: F401

from .. import RECURSION_LIMIT

sys.setrecursionlimit(RECURSION_LIMIT)
