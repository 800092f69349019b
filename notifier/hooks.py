"""How campaigns plug into the delivery core, which never imports them.

The core sends messages; some belong to a campaign (`Message.campaign_id`). What the core needs
to know or do for those, and only for those, it asks the one `CampaignHook` registered here
(campaigns.apps registers campaigns.hooks.CampaignsPlugin when the app loads). The dependency
runs one way in code; the campaigns app is still installed with the core (messages keep foreign
keys to its campaigns, steps and variants). A transactional `notify()` never reaches the hook:
its message has no campaign.

The questions, per batch of messages (one or two queries each, never one per message):

- `batch(messages)`: what routing needs to know of each message's campaign (cancelled, paused,
  allowed to send in quiet hours, the customer's series stopped), and its copy: extra template
  values (the campaign, the customer's persona), the variant's copy instead of the type's
  templates, links rewritten for click and open tracking;
- `send_rates(campaign_ids)`: each campaign's own send rate (messages a minute), which
  delivering honours on top of the providers' limits (one query per deliver batch);
- `retention_keeps()`: SQL conditions under which the retention job must keep a message (its
  campaign is still live, a conversion points at it);
- `failure_alerts(now)`: the failure-rate job's turn for campaigns (pausing failing ones);
- `urls()`: the campaign routes notifier.urls serves too (click and open tracking), so a host
  includes one URLconf.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from channels.base import Channel, Content
    from notifier.models import Message


@dataclass(frozen=True, slots=True)
class CampaignFacts:
    """What admission needs to know of a message's campaign."""

    cancelled: bool = False
    paused: bool = False
    quiet_hours_allowed: bool = False  # a marketing lead let it send in quiet hours
    series_stopped: bool = False  # the customer converted or clicked: the rest is moot


NO_CAMPAIGN = CampaignFacts()


class CampaignBatch(Protocol):
    """A batch's campaigns, loaded once."""

    def facts(self, message: Message) -> CampaignFacts: ...

    def copy_context(self, message: Message) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Template values to add (`campaign`, and the persona's under `user`) and the
        persona keys the variant's copy is chosen by."""
        ...

    def render(
        self,
        message: Message,
        channel: Channel,
        context: Mapping[str, Any],
        locale: str,
        personas: tuple[str, ...],
    ) -> Content:
        """The message's variant copy for one channel (raises as rendering does)."""
        ...

    def track(self, message: Message, channel: Channel, content: Content) -> Content:
        """The content with its links and pixel rewritten for click and open tracking."""
        ...


class CampaignHook(Protocol):
    def batch(self, messages: Sequence[Message]) -> CampaignBatch: ...

    def send_rates(self, campaign_ids: Collection[int]) -> dict[int, int]:
        """Messages a minute, for those of these campaigns that have a rate of their own."""
        ...

    def retention_keeps(self) -> list[str]:
        """SQL conditions on the message row `m`, each true when the message must stay."""
        ...

    def failure_alerts(self, now: datetime) -> list[int]:
        """Act on failing campaigns; the ids of those paused."""
        ...

    def urls(self) -> list[Any]:
        """URL patterns to serve inside notifier.urls' namespace."""
        ...


class _NoCampaigns:
    """The batch of messages none of which belongs to a campaign (or, in a unit test, with no
    hook registered). The campaigns app itself is not optional: messages keep foreign keys to
    its campaigns, steps and variants."""

    def facts(self, message: Message) -> CampaignFacts:
        return NO_CAMPAIGN

    def copy_context(self, message: Message) -> tuple[dict[str, Any], tuple[str, ...]]:
        return {}, ()

    def render(
        self,
        message: Message,
        channel: Channel,
        context: Mapping[str, Any],
        locale: str,
        personas: tuple[str, ...],
    ) -> Content:
        raise LookupError(f"message {message.pk} has a variant but no campaigns app is installed")

    def track(self, message: Message, channel: Channel, content: Content) -> Content:
        return content


NO_CAMPAIGNS: CampaignBatch = _NoCampaigns()
_hook: CampaignHook | None = None


def register_campaigns(hook: CampaignHook | None) -> None:
    """Plug campaigns in (None unplugs them: tests)."""
    global _hook
    _hook = hook


def campaign_batch(messages: Sequence[Message]) -> CampaignBatch:
    """The campaigns of these messages; no query at all when none belongs to one."""
    if _hook is None or not any(m.campaign_id for m in messages):
        return NO_CAMPAIGNS
    return _hook.batch(messages)


def campaign_send_rates(campaign_ids: Iterable[int | None]) -> dict[int, int]:
    """Campaign id -> its own send rate (messages a minute); no query without a campaign."""
    ids = {pk for pk in campaign_ids if pk}
    if _hook is None or not ids:
        return {}
    return _hook.send_rates(ids)


def retention_keeps() -> list[str]:
    return _hook.retention_keeps() if _hook is not None else []


def campaign_failure_alerts(now: datetime) -> list[int]:
    return _hook.failure_alerts(now) if _hook is not None else []


def campaign_urls() -> list[Any]:
    return _hook.urls() if _hook is not None else []
