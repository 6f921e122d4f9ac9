"""Storage: small role ports (``ports``) over plain records (``records``) and the faults
they raise (``errors``); two adapters laid out alike (``sqlite``, ``postgres``); the
factory that parses ``DATABASE_URL`` and opens one (``factory``); and what both adapters
share (``rows``, ``summaries``, ``migrations``)."""
