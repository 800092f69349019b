"""Tracking endpoints: the click redirect and the email open pixel.

GET /t/c/<token>/<index>/
                      records the click, then 302 to the URL recorded at that index for the
                      token's message; anything else (a bad token, an unknown message or index)
                      is a 404. Nothing in the request but the signed token and the index is
                      read, and the URL is always one recorded for that very message, so
                      neither a query string, an edited index nor a forged token can point the
                      redirect anywhere else. HEAD answers the same without recording (link
                      scanners probe with it).
GET /t/c/<token>/     the same for links sent before one token per message: the index is in
                      the token.
GET /t/o/<token>.gif  always a 1x1 transparent GIF that must not be cached; records the open
                      when the token is valid.
"""

from __future__ import annotations

import base64
import logging

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, HttpResponseRedirect
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_safe

from campaigns.services.tracking import record_click, record_open, recorded_link
from campaigns.tracking import BadToken, read_click, read_click_token, read_open_token

log = logging.getLogger(__name__)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NOT_FOUND_PAGE = (
    '<!doctype html><html><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>Link not found</title></head><body><h1>This link is not valid</h1>"
    "<p>Open it again from the message it came in.</p></body></html>"
)


def _not_found() -> HttpResponse:
    response = HttpResponseNotFound(NOT_FOUND_PAGE)
    add_never_cache_headers(response)
    return response


@require_safe
def track_click(request: HttpRequest, token: str, index: int | None = None) -> HttpResponse:
    try:
        claim = read_click_token(token) if index is None else read_click(token, index)
    except BadToken:
        return _not_found()
    lookup = record_click if request.method == "GET" else recorded_link
    url = lookup(message_id=claim.message_id, channel=claim.channel, index=claim.index)
    if url is None:
        return _not_found()
    response = HttpResponseRedirect(url)
    add_never_cache_headers(response)  # every click must reach us, not a cached redirect
    return response


@require_safe
def track_open(request: HttpRequest, token: str) -> HttpResponse:
    if request.method == "GET":
        try:
            claim = read_open_token(token)
        except BadToken:
            log.info("open pixel with a bad token")
        else:
            record_open(message_id=claim.message_id, channel=claim.channel)
    response = HttpResponse(PIXEL, content_type="image/gif")
    add_never_cache_headers(response)
    response["Pragma"] = "no-cache"  # HTTP/1.0 proxies
    return response
