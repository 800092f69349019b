"""The public endpoints, discovered from the URLconf: every URL outside the admin.

Shared by the rate-limit tests and the bad-input corpus, so an endpoint added to any urls.py
(webhooks, /metrics, an inbox page) is covered by both without being listed anywhere here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Endpoint:
    name: str
    route: str
    converters: dict[str, Any] = field(hash=False, compare=False)

    def url(self, **values: Any) -> str:
        """The URL with `values` for its parameters; a plausible default for the others."""
        kwargs = {
            key: values.get(key, 1 if isinstance(conv, IntConverter) else "x")
            for key, conv in self.converters.items()
        }
        return reverse(self.name, kwargs=kwargs)

    @property
    def takes_token(self) -> bool:
        return "token" in self.converters

    def __str__(self) -> str:
        return self.name


def _walk(
    patterns: list[Any], prefix: str = "", namespaces: tuple[str, ...] = ()
) -> Iterator[tuple[URLPattern, str, tuple[str, ...], dict[str, Any]]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            spaces = (*namespaces, entry.namespace) if entry.namespace else namespaces
            yield from (
                (p, route, ns, {**entry.pattern.converters, **conv})
                for p, route, ns, conv in _walk(
                    entry.url_patterns, prefix + str(entry.pattern), spaces
                )
            )
        else:
            yield entry, prefix + str(entry.pattern), namespaces, dict(entry.pattern.converters)


def public_endpoints() -> list[Endpoint]:
    """Every named URL outside the admin, in URLconf order."""
    found = []
    for pattern, route, namespaces, converters in _walk(get_resolver().url_patterns):
        if "admin" in namespaces:
            continue
        assert pattern.name, f"name the URL {route!r}: the security tests find endpoints by name"
        name = ":".join([*namespaces, pattern.name])
        found.append(Endpoint(name=name, route=route, converters=converters))
    return found
