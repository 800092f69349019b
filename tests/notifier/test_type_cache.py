"""The notification-type cache: known types are remembered, unknown keys cannot grow it."""

from __future__ import annotations

import pytest

from notifier import selectors


@pytest.mark.django_db
def test_unknown_type_keys_do_not_grow_the_cache_without_bound() -> None:
    for n in range(selectors.TYPE_CACHE_MAX_MISSES + 500):
        assert selectors.type_info_get(f"no.such.type.{n}") is None
    assert len(selectors._type_cache) <= selectors.TYPE_CACHE_MAX_MISSES

    # A type that exists is still cached once the misses filled the cache.
    info = selectors.type_info_get("order.shipped")
    assert info is not None
    assert "order.shipped" in selectors._type_cache
