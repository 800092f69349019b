"""What every route module of the service API shares: the error body and the refusals a route
may answer with, so each route's OpenAPI entry lists them."""

from __future__ import annotations

from typing import Any

from ninja import Schema
from pydantic import Field


class Problem(Schema):
    type: str = Field(description="The error's name, e.g. InvalidRecipient")
    message: str = Field(description="What was wrong and what to send instead")


# Every route behind a key: no key or a bad one, a key without the scope, over its rate limit,
# and a body that is not what the schema says.
AUTH_REFUSALS: dict[int, Any] = {401: Problem, 403: Problem, 422: Problem, 429: Problem}


def answers(ok: dict[int, Any], *codes: int) -> dict[int, Any]:
    """A route's responses: `ok`, the key's refusals, and these further error codes."""
    return {**ok, **AUTH_REFUSALS, **dict.fromkeys(codes, Problem)}
