"""Contact points shown masked to staff without `notifier.view_contact_details`: enough to
recognise a customer ("a****@example.com", "+86*******8000"), not enough to contact them outside
the pipeline. Also applied to what a message said, which quotes the customer's own details."""

from __future__ import annotations

import re
from collections.abc import Iterable

import phonenumbers


def mask_email(email: str) -> str:
    """'alice@example.com' -> 'a****@example.com': enough to recognise, not to copy."""
    local, at, domain = email.partition("@")
    if not at:
        return ""
    return f"{local[:1]}{'*' * max(len(local) - 1, 1)}@{domain}"


def mask_phone(phone: str) -> str:
    """'+8613800138000' -> '+86*******8000': the country code and the last four digits."""
    if len(phone) <= 7:
        return "*" * len(phone)
    return f"{phone[:3]}{'*' * (len(phone) - 7)}{phone[-4:]}"


def mask_word(word: str) -> str:
    return f"{word[:1]}{'*' * max(len(word) - 1, 1)}"


def mask_in_text(
    text: str, *, emails: Iterable[str], phones: Iterable[str], names: Iterable[str]
) -> str:
    """The text with each of the customer's addresses, numbers and names masked where quoted."""
    for email in sorted({e for e in emails if e}, key=len, reverse=True):
        # However cased: copy may write the address in capitals, or the user model differently.
        text = re.sub(re.escape(email), lambda found: mask_email(found[0]), text, flags=re.I)
    for phone in sorted({p for p in phones if p}, key=len, reverse=True):
        text = text.replace(phone, mask_phone(phone))
        national = _national_number(phone)  # as copy in the customer's country writes it
        if national and len(national) >= 6:
            text = text.replace(national, mask_word(national[:-4]) + national[-4:])
    for name in sorted({n for n in names if n and len(n) > 1}, key=len, reverse=True):
        text = _name_pattern(name).sub(lambda found: mask_word(found[0]), text)
    return text


def _name_pattern(name: str) -> re.Pattern[str]:
    """The name as a whole word, however cased: "Lin" in "Dear Ms Lin," but not in "Link". A
    Chinese name is not cut off by the characters around it (Chinese has no spaces)."""
    before = r"(?<![A-Za-z0-9])" if name[0].isascii() and name[0].isalnum() else ""
    after = r"(?![A-Za-z0-9])" if name[-1].isascii() and name[-1].isalnum() else ""
    return re.compile(before + re.escape(name) + after, re.I)


def _national_number(phone: str) -> str:
    try:
        return str(phonenumbers.parse(phone, None).national_number)
    except phonenumbers.NumberParseException:
        return ""
