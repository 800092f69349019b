"""Click and open tracking for campaign messages: rewrite a message's links, sign their token.

`track_content` replaces every http(s) link of a rendered message with our redirect,
`<site>/t/c/<token>/<index>/`, and records the original URLs, in order, in `Content.links`. The
token is signed once per message (salt "campaigns.message") and names only (message, channel);
the index in the path says which of the message's links it is. The view looks the URL up in
that delivery's stored content, so a link can lead nowhere but a URL we recorded for that very
message: an edited index leads to another link of the same message or to a 404, a forged or
re-used token to a 404 (no open redirect). Email HTML also gets a 1x1 open pixel,
`<site>/t/o/<token>.gif`, with the same token.

Links sent before carried one token per link, `<site>/t/c/<token>/` (salt "campaigns.click",
naming (message, channel, index)), and the pixel its own (salt "campaigns.open"): both are
still read.

Our own unsubscribe and preference links stay as they are: they are signed links already, and
an unsubscribe must never depend on the tracker.

Tokens carry no timestamp (a link in a year-old email still works) and are kept short, since
they end up in SMS; rotating SECRET_KEY with the old key in SECRET_KEY_FALLBACKS keeps them valid.
"""

from __future__ import annotations

import functools
import html as html_lib
import re
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.core import signing

from channels.base import Channel, Content
from notifier.links import token_url
from notifier.signing import signer

MESSAGE_SALT = "campaigns.message"
# The salts of the tokens sent before one token per message: still read.
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
# A channel's value, written into a token's JSON as it is (nothing JSON would escape).
CHANNEL_TEXT_RE = re.compile(r"[a-z_]+")


class BadToken(ValueError):
    """A tracking token that cannot be trusted: malformed, tampered, or signed for another use."""


@dataclass(frozen=True, slots=True)
class ClickClaim:
    message_id: int
    channel: Channel
    index: int  # into the delivery's Content.links


@dataclass(frozen=True, slots=True)
class OpenClaim:
    """What a message token (or an old open token) names: the message, on one channel."""

    message_id: int
    channel: Channel


MessageClaim = OpenClaim


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


def message_token(*, message_id: int, channel: Channel) -> str:
    """The one token of a message's links on one channel: its clicks and its open pixel.
    `Signer.sign_object([message_id, channel])` byte for byte, its JSON written directly: the
    fan-out signs one per recipient."""
    if type(message_id) is not int or not CHANNEL_TEXT_RE.fullmatch(str(channel)):
        return _sign([message_id, str(channel)], salt=MESSAGE_SALT)
    payload = signing.b64_encode(f'[{message_id},"{channel}"]'.encode()).decode()
    return signer(MESSAGE_SALT).sign(payload)


def read_message_token(token: object) -> MessageClaim:
    """The claim in a message token, or BadToken."""
    message_id, channel = _unsign(token, salt=MESSAGE_SALT, size=2)
    return MessageClaim(message_id=_positive_int(message_id, minimum=1), channel=_channel(channel))


def click_token(*, message_id: int, channel: Channel, index: int) -> str:
    """A click token as links sent before one token per message carry (tests make them)."""
    return _sign([message_id, str(channel), index], salt=CLICK_SALT)


def read_click_token(token: object) -> ClickClaim:
    """The claim in a click token of the old form, `/t/c/<token>/`, or BadToken."""
    message_id, channel, index = _unsign(token, salt=CLICK_SALT, size=3)
    return ClickClaim(
        message_id=_positive_int(message_id, minimum=1),
        channel=_channel(channel),
        index=_positive_int(index, minimum=0),
    )


def read_click(token: object, index: int) -> ClickClaim:
    """The claim of a click on `/t/c/<token>/<index>/`: the message token's, at that index."""
    claim = read_message_token(token)
    return ClickClaim(
        message_id=claim.message_id,
        channel=claim.channel,
        index=_positive_int(index, minimum=0),
    )


def open_token(*, message_id: int, channel: Channel) -> str:
    """An open token as pixels sent before one token per message carry (tests make them)."""
    return _sign([message_id, str(channel)], salt=OPEN_SALT)


def read_open_token(token: object) -> OpenClaim:
    """The claim in an open pixel's token, a message token or an old open token; BadToken
    for anything else (a click token of the old form opens nothing)."""
    try:
        return read_message_token(token)
    except BadToken:
        message_id, channel = _unsign(token, salt=OPEN_SALT, size=2)
    return OpenClaim(message_id=_positive_int(message_id, minimum=1), channel=_channel(channel))


def _site() -> str:
    return str(settings.NOTIFIER_SITE_URL).rstrip("/")


def click_base(token: str) -> str:
    """`<site>/t/c/<token>/`: a message's click redirects are this and `<index>/` (the route
    with an index is the one without plus `<index>/`: campaigns.hooks declares both)."""
    return token_url("notifier:track-click", token)


def click_url(*, token: str, index: int) -> str:
    """The redirect of link `index` of the message whose token this is."""
    return f"{click_base(token)}{index}/"


def open_pixel_url(*, token: str) -> str:
    return token_url("notifier:track-open", token)


# --- Rewriting ------------------------------------------------------------------------------


def is_tracked_url(url: str, untracked: tuple[str, ...] | None = None) -> bool:
    """Whether a URL should go through the click redirect: http(s), and not one of our own
    unsubscribe, preference or tracking links (`untracked`: `_untracked_prefixes()`)."""
    if not url.lower().startswith(("http://", "https://")):
        return False
    return not url.startswith(_untracked_prefixes() if untracked is None else untracked)


def _untracked_prefixes(site: str | None = None) -> tuple[str, ...]:
    site = _site() if site is None else site
    return tuple(f"{site}{path}" for path in UNTRACKED_PATHS)


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
    """Hands out one index per distinct URL, in the order URLs are first met; the message's
    token is signed when the first one is."""

    def __init__(self, *, message_id: int, channel: Channel) -> None:
        self.message_id, self.channel = message_id, channel
        self.site = _site()
        self.untracked = _untracked_prefixes(self.site)
        self.links: list[str] = []
        self._tracked: dict[str, str] = {}
        self._token: str | None = None
        self._click_base = ""

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = message_token(message_id=self.message_id, channel=self.channel)
        return self._token

    def tracked(self, url: str) -> str:
        if not is_tracked_url(url, self.untracked):
            return url
        tracked = self._tracked.get(url)
        if tracked is None:  # one index per distinct URL
            if not self._click_base:
                self._click_base = click_base(self.token)
            tracked = self._tracked[url] = f"{self._click_base}{len(self.links)}/"
            self.links.append(url)
        return tracked

    def text(self, text: str) -> str:
        def swap(match: re.Match[str]) -> str:
            url = _trim(match.group(0))
            return self.tracked(url) + match.group(0)[len(url) :]

        return TEXT_URL_RE.sub(swap, text)

    def html(self, markup: str) -> str:
        def swap_tag(match: re.Match[str]) -> str:
            tag = match.group(0)
            parts = _href_parts(tag) if len(tag) <= TAG_KEPT_MAX else _cut_href(tag)
            if parts is None:
                return tag
            head, url, tail = parts
            new = self.tracked(url)
            if new == url:
                return tag
            return f'{head}"{html_lib.escape(new)}"{tail}'

        return LINK_TAG_RE.sub(swap_tag, markup)


TAG_KEPT_MAX = 2048  # longer link tags are cut anew each time, not kept


def _cut_href(tag: str) -> tuple[str, str, str] | None:
    """A link tag cut around its first href: (the tag up to and with `href=`, the URL as the
    template meant it, what follows the value), or None for a tag without one."""
    match = HREF_RE.search(tag)
    if match is None:
        return None
    raw = match.group("dq") or match.group("sq") or match.group("bare") or ""
    url = html_lib.unescape(raw).strip()  # the template escaped & as &amp;
    return tag[: match.end("before")], url, tag[match.end() :]


# Kept per process: every recipient's copy of a campaign holds the same link tags, and cutting
# each anew was most of the cost of tracking a real-sized email. What the cut gives depends on
# the tag's text alone; the message's own token goes in afterwards.
_href_parts = functools.lru_cache(maxsize=1024)(_cut_href)  # at most about 2 MB


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
    if is_tracked_url(link.strip(), rewriter.untracked):
        link = rewriter.tracked(link.strip())
    if channel is Channel.EMAIL and markup and f"{rewriter.site}/t/o/" not in markup:
        markup = _with_pixel(markup, open_pixel_url(token=rewriter.token))
    return replace(content, body=body, html=markup, link=link, links=tuple(rewriter.links))
