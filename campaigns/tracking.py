"""Click and open tracking for campaign messages: rewrite a message's links, sign their tokens.

`track_content` replaces every http(s) link of a rendered message with our redirect,
`<site>/t/c/<token>/`, and records the original URLs, in order, in `Content.links`. A click
token is signed (salt "campaigns.click") and names only (message, channel, index): the view
looks the URL up in that delivery's stored content, so a token can lead nowhere but a URL we
recorded for that very message (no open redirect, even with a forged or re-used token). Email
HTML also gets a 1x1 open pixel, `<site>/t/o/<token>.gif` (salt "campaigns.open").

Our own unsubscribe and preference links stay as they are: they are signed links already, and
an unsubscribe must never depend on the tracker.

Tokens carry no timestamp (a link in a year-old email still works) and are kept short, since
they end up in SMS; rotating SECRET_KEY with the old key in SECRET_KEY_FALLBACKS keeps them valid.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.core import signing

from channels.base import Channel, Content
from notifier.links import token_url
from notifier.signing import signer

CLICK_SALT = "campaigns.click"
OPEN_SALT = "campaigns.open"
MAX_TOKEN_LENGTH = 300
# What Signer.sign_object() gives out: urlsafe base64 payload, ":", urlsafe base64 signature.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+:[A-Za-z0-9_-]+")

# Our own signed links that must keep working without the tracker.
UNTRACKED_PATHS = ("/unsubscribe/", "/preferences/", "/t/")

# An absolute http(s) URL in plain text: RFC 3986 characters only, so the URL ends at a space,
# a double quote, an angle bracket or any non-ASCII character (Chinese text often has no space
# after a URL).
TEXT_URL_RE = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE)
TRAILING_PUNCTUATION = ".,;:!?'"
# The opening tag of a link, and the href inside it (double-, single- or unquoted).
LINK_TAG_RE = re.compile(r"<(?:a|area)\b[^>]*>", re.IGNORECASE)
HREF_RE = re.compile(
    r"""(?P<before>\shref\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'=<>`]+))""",
    re.IGNORECASE,
)
BODY_END_RE = re.compile(r"</body\s*>", re.IGNORECASE)


class BadToken(ValueError):
    """A tracking token that cannot be trusted: malformed, tampered, or signed for another use."""


@dataclass(frozen=True, slots=True)
class ClickClaim:
    message_id: int
    channel: Channel
    index: int  # into the delivery's Content.links


@dataclass(frozen=True, slots=True)
class OpenClaim:
    message_id: int
    channel: Channel


# --- Tokens ---------------------------------------------------------------------------------


def _sign(payload: list[Any], *, salt: str) -> str:
    return signer(salt).sign_object(payload)


def _unsign(token: object, *, salt: str, size: int) -> list[Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not TOKEN_RE.fullmatch(token):
        raise BadToken("not a tracking token")
    try:
        payload = signer(salt).unsign_object(token)
    except signing.BadSignature as exc:
        raise BadToken("the tracking token's signature does not match") from exc
    except ValueError as exc:  # a valid signature over a payload that is not JSON
        raise BadToken("the tracking token holds no claim") from exc
    if not isinstance(payload, list) or len(payload) != size:
        raise BadToken("the tracking token holds no claim")
    return payload


def _positive_int(value: object, *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadToken("the tracking token holds no claim")
    return value


def _channel(value: object) -> Channel:
    if not isinstance(value, str) or value not in Channel.__members__.values():
        raise BadToken("the tracking token names no channel")
    return Channel(value)


def click_token(*, message_id: int, channel: Channel, index: int) -> str:
    return _sign([message_id, str(channel), index], salt=CLICK_SALT)


def read_click_token(token: object) -> ClickClaim:
    """The claim in a click token, or BadToken."""
    message_id, channel, index = _unsign(token, salt=CLICK_SALT, size=3)
    return ClickClaim(
        message_id=_positive_int(message_id, minimum=1),
        channel=_channel(channel),
        index=_positive_int(index, minimum=0),
    )


def open_token(*, message_id: int, channel: Channel) -> str:
    return _sign([message_id, str(channel)], salt=OPEN_SALT)


def read_open_token(token: object) -> OpenClaim:
    """The claim in an open-pixel token, or BadToken."""
    message_id, channel = _unsign(token, salt=OPEN_SALT, size=2)
    return OpenClaim(message_id=_positive_int(message_id, minimum=1), channel=_channel(channel))


def _site() -> str:
    return str(settings.NOTIFIER_SITE_URL).rstrip("/")


def click_url(*, message_id: int, channel: Channel, index: int) -> str:
    return token_url(
        "notifier:track-click", click_token(message_id=message_id, channel=channel, index=index)
    )


def open_pixel_url(*, message_id: int, channel: Channel) -> str:
    return token_url("notifier:track-open", open_token(message_id=message_id, channel=channel))


# --- Rewriting ------------------------------------------------------------------------------


def is_tracked_url(url: str) -> bool:
    """Whether a URL should go through the click redirect: http(s), and not one of our own
    unsubscribe, preference or tracking links."""
    if not url.lower().startswith(("http://", "https://")):
        return False
    site = _site()
    return not any(url.startswith(f"{site}{path}") for path in UNTRACKED_PATHS)


def _trim(url: str) -> str:
    """Drop what ends a sentence, not the URL: 'see https://x.com/a.' or '(https://x.com)'."""
    while url:
        last = url[-1]
        if (
            last in TRAILING_PUNCTUATION
            or (last == ")" and url.count("(") < url.count(")"))
            or (last == "]" and url.count("[") < url.count("]"))
        ):
            url = url[:-1]
        else:
            break
    return url


class _Rewriter:
    """Hands out one index per distinct URL, in the order URLs are first met."""

    def __init__(self, *, message_id: int, channel: Channel) -> None:
        self.message_id, self.channel = message_id, channel
        self.links: list[str] = []
        self._tracked: dict[str, str] = {}

    def tracked(self, url: str) -> str:
        if not is_tracked_url(url):
            return url
        tracked = self._tracked.get(url)
        if tracked is None:  # one index, and one signed link, per distinct URL
            tracked = self._tracked[url] = click_url(
                message_id=self.message_id, channel=self.channel, index=len(self.links)
            )
            self.links.append(url)
        return tracked

    def text(self, text: str) -> str:
        def swap(match: re.Match[str]) -> str:
            url = _trim(match.group(0))
            return self.tracked(url) + match.group(0)[len(url) :]

        return TEXT_URL_RE.sub(swap, text)

    def html(self, markup: str) -> str:
        def swap_href(match: re.Match[str]) -> str:
            raw = match.group("dq") or match.group("sq") or match.group("bare") or ""
            url = html_lib.unescape(raw).strip()  # the template escaped & as &amp;
            new = self.tracked(url)
            if new == url:
                return match.group(0)
            return f'{match.group("before")}"{html_lib.escape(new)}"'

        def swap_tag(match: re.Match[str]) -> str:
            return HREF_RE.sub(swap_href, match.group(0), count=1)

        return LINK_TAG_RE.sub(swap_tag, markup)


def _with_pixel(markup: str, pixel_url: str) -> str:
    pixel = (
        f'<img src="{html_lib.escape(pixel_url)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px" />'
    )
    ends = list(BODY_END_RE.finditer(markup))
    if not ends:
        return markup + pixel
    at = ends[-1].start()
    return markup[:at] + pixel + markup[at:]


def track_content(content: Content, *, message_id: int, channel: Channel) -> Content:
    """The content with its links going through the click redirect, and on email HTML an open
    pixel. Rewritten: hrefs of <a>/<area> in `html`, URLs in the plain-text `body` of email and
    SMS, and the `link` field (in-app, push). Each distinct URL gets one index, in the order the
    URLs first appear reading body, then html, then link; `links` holds them in that order.

    Content whose links are already recorded is returned as it is, so tracking twice is harmless.
    """
    if content.links:
        return content
    channel = Channel(channel)  # a delivery row's plain string works too
    rewriter = _Rewriter(message_id=message_id, channel=channel)
    body = rewriter.text(content.body) if channel in (Channel.EMAIL, Channel.SMS) else content.body
    markup = rewriter.html(content.html) if content.html else ""
    link = content.link
    if is_tracked_url(link.strip()):
        link = rewriter.tracked(link.strip())
    if channel is Channel.EMAIL and markup and f"{_site()}/t/o/" not in markup:
        markup = _with_pixel(markup, open_pixel_url(message_id=message_id, channel=channel))
    return replace(content, body=body, html=markup, link=link, links=tuple(rewriter.links))
