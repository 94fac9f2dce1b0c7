"""Primitives under the contracts' names: ``llm.tokens`` is ``llmTokens`` in
``/billing/usage`` and in a plans file, ``api.calls`` is ``apiCalls``.

A primitive's metric name joins its parts (split at ``.``, ``_`` and ``-``) in camelCase;
a metric name's primitive splits it before each capital and joins the parts with ``.``.
So ``apiCalls`` -> ``api.calls`` -> ``apiCalls``: every metric name in camelCase (a
lowercase word, then words that each start with one capital) round-trips, and so does
every primitive whose parts are joined by ``.`` and start with a letter.
"""

from __future__ import annotations

import re

METRIC_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*\Z")


def metric_name(primitive: str) -> str:
    """``llm.tokens`` -> ``llmTokens``."""
    head, *rest = re.split(r"[._-]", primitive)
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def metric_primitive(name: str) -> str | None:
    """``llmTokens`` -> ``llm.tokens``; None when ``name`` is not a camelCase metric name."""
    if not METRIC_NAME.match(name):
        return None
    return ".".join(part.lower() for part in re.split(r"(?=[A-Z])", name))


def metric_names(primitives: list[str]) -> dict[str, str]:
    """Each primitive's metric name, when its keys in ``/billing/usage`` (the name and the
    name + ``Limit``) are the primitive's alone; the slug itself when two primitives would
    share a key (``email.send`` and ``email_send``; ``email`` and ``email.limit``, whose
    ``emailLimit`` is also ``email``'s limit)."""
    owners: dict[str, set[str]] = {}
    for primitive in primitives:
        name = metric_name(primitive)
        for key in (name, name + "Limit"):
            owners.setdefault(key, set()).add(primitive)

    def alone(primitive: str) -> bool:
        name = metric_name(primitive)
        return owners[name] == owners[name + "Limit"] == {primitive}

    return {
        primitive: metric_name(primitive) if alone(primitive) else primitive
        for primitive in primitives
    }
