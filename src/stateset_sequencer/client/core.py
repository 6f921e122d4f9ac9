"""The part of :class:`~.asyncclient.SequencerClient` every route method stands on: the
httpx client, the base URLs, the retry policy, and one call turned into its answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self
from urllib.parse import quote

import httpx

from .dispatch import Dispatcher, base_urls
from .errors import UnexpectedResponse, error_from
from .retry import IDEMPOTENT_METHODS, RetryPolicy
from .shapes import Reply

DEFAULT_TIMEOUT_S = 30.0


class ClientCore:
    def __init__(
        self,
        base_url: str | Sequence[str],
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        sequencer_public_key: bytes | None = None,
        allow_unsigned_receipts: bool = False,
        retry: RetryPolicy | None = None,
    ) -> None:
        urls = base_urls(base_url)
        headers = {"Authorization": f"ApiKey {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport)
        self._dispatch = Dispatcher(self._http, urls, retry if retry is not None else RetryPolicy())
        self.sequencer_public_key = sequencer_public_key
        self.allow_unsigned_receipts = allow_unsigned_receipts
        # Asked at most once: a server without the route (the reference) gets hash checks.
        self._key_asked = sequencer_public_key is not None

    @property
    def base_url(self) -> str:
        """The base URL the next call goes to first: the one that answered last."""
        return self._dispatch.current

    @property
    def base_urls(self) -> tuple[str, ...]:
        return self._dispatch.urls

    @property
    def retry(self) -> RetryPolicy:
        return self._dispatch.policy

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self._dispatch.policy = policy

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Any route: the decoded JSON of a 2xx answer, or its text when not JSON.
        ``idempotent`` (by default: true for GET, HEAD, OPTIONS, PUT and DELETE) decides
        whether the call may be retried once it may have reached the server."""
        return await self._call(
            method, path, json=json, params=params, content=content, idempotent=idempotent
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        idempotent: bool | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Any:
        """As :meth:`request`; a status in ``accept`` is answered as a 2xx is (a route
        whose error status carries its report)."""
        method = method.upper()
        headers = {"content-type": "application/json"} if content is not None else None
        answer = await self._dispatch.send(
            method,
            path,
            idempotent=method in IDEMPOTENT_METHODS if idempotent is None else idempotent,
            json=json,
            params=params,
            content=content,
            headers=headers,
            accept=accept,
        )
        response = answer.response
        status = response.status_code
        if status >= 400 and status not in accept:
            error = error_from(response)
            error.attempts = answer.attempts
            raise error
        what = f"{method} {path}"
        if 300 <= status < 400:
            where = response.headers.get("location", "nowhere said")
            raise UnexpectedResponse(what, f"answered {status}, a redirect to {where}")
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                return response.json()
            except ValueError:
                raise UnexpectedResponse(what, "the body is not valid JSON") from None
        return response.text

    async def _reply(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Reply:
        """A call whose answer must be a JSON object."""
        data = await self._call(
            method, path, json=json, params=params, idempotent=idempotent, accept=accept
        )
        return Reply.of(data, f"{method} {path}")

    async def _object(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> dict[str, Any]:
        reply = await self._reply(method, path, json=json, params=params, idempotent=idempotent)
        return reply.data


def segment(text: str) -> str:
    """One path segment, whatever characters it holds (slashes included)."""
    return quote(text, safe="")
