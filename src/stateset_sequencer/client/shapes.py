"""Reading an answer's fields, so that a body of the wrong shape is an
:class:`UnexpectedResponse` naming the route and the field, never a ``KeyError``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UnexpectedResponse


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "text", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def as_object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UnexpectedResponse(what, f"expected a JSON object, got {_kind(data)}")
    return data


@dataclass(frozen=True, slots=True)
class Reply:
    """A JSON object answered by ``what`` (the method and path)."""

    what: str
    data: dict[str, Any]

    @classmethod
    def of(cls, data: Any, what: str) -> Reply:
        return cls(what, as_object(data, what))

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise UnexpectedResponse(self.what, f"the answer has no {key!r}")
        return self.data[key]

    def _wrong(self, key: str, expected: str, value: Any) -> UnexpectedResponse:
        return UnexpectedResponse(self.what, f"{key!r} is {_kind(value)}, expected {expected}")

    def integer(self, key: str) -> int:
        value = self._get(key)
        if type(value) is not int:
            raise self._wrong(key, "an integer", value)
        return value

    def optional_integer(self, key: str) -> int | None:
        value = self.data.get(key)
        return None if value is None else self.integer(key)

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "text", value)
        return value

    def boolean(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self._wrong(key, "a boolean", value)
        return value

    def objects(self, key: str, *, optional: bool = False) -> list[dict[str, Any]]:
        """A list of JSON objects (absent: empty, when ``optional``)."""
        if optional and self.data.get(key) is None:
            return []
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "an array", value)
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self._wrong(f"{key}[{index}]", "an object", item)
        return value

    def child(self, key: str) -> Reply:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self._wrong(key, "an object", value)
        return Reply(f"{self.what} {key}", value)
