"""The async client: every route, one class."""

from __future__ import annotations

from .access import AccessRoutes
from .commitments import CommitmentRoutes
from .reads import EventRoutes
from .service import ServiceRoutes
from .stream import StreamRoutes


class SequencerClient(EventRoutes, StreamRoutes, AccessRoutes, CommitmentRoutes, ServiceRoutes):
    """An async client. Use as ``async with SequencerClient(url, api_key) as client``.

    ``base_url`` is one URL or several (tried round robin on failure, the one that last
    answered first); ``retry`` the :class:`RetryPolicy` of every call (the default: five
    tries within 30 s; ``RetryPolicy.none()`` for one). ``transport`` replaces httpx's
    (tests). ``sequencer_public_key`` is the receipt key, else fetched from
    ``/api/v1/ves/sequencer`` before the first signed receipt is checked; unsigned
    receipts are refused unless ``allow_unsigned_receipts``.
    """
