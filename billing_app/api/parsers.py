"""JSON in, refused cleanly when Python cannot take it: nesting deeper than the
interpreter's recursion limit, or strings that are not Unicode text (a lone surrogate
escape such as ``"\\ud800"``, which no database can store)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        _check_text(data)
        return data


def _check_text(value: Any) -> None:
    """A ParseError naming where the first string that is not Unicode text is, as a field
    error does: ``timestamp``, ``events.1.timestamp`` (a bad key: the object holding it)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            _encodable(path, item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _encodable(path, key)
                stack.append((_join(path, key), child))
        elif isinstance(item, list):
            stack.extend((_join(path, str(index)), child) for index, child in enumerate(item))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _encodable(path: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        message = "JSON parse error - a string is not valid Unicode text (a lone surrogate)."
        raise ParseError({path or "non_field_errors": [message]}) from None
