"""`manage.py check` fails on a code-defined template that cannot compile, not only on one that
cannot parse: Python refuses some templates Jinja reads, and every render of them would fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from channels.base import Channel
from notifier.operations import checks

NESTED_LOOPS = "{% for x in [1] %}" * 21 + "{{ x }}" + "{% endfor %}" * 21
LONG_SUM = "{{ " + " + ".join(["1"] * 3000) + " }}"


@pytest.mark.parametrize("source", [NESTED_LOOPS, LONG_SUM], ids=["21 nested loops", "long sum"])
def test_a_template_that_cannot_compile_fails_the_check(source, monkeypatch, tmp_path: Path):
    broken = tmp_path / "sms.body.txt"
    broken.write_text(source)
    real = checks.template_files

    def with_broken(type_key: str, channel: Channel) -> list[Path]:
        extra = [broken] if (type_key, channel) == ("order.shipped", Channel.SMS) else []
        return real(type_key, channel) + extra

    monkeypatch.setattr(checks, "template_files", with_broken)
    [error] = [e for e in checks.check_notification_templates() if e.id == "notifier.E002"]
    assert error.msg == (
        "template sms.body.txt of 'order.shipped' does not compile: it nests too deeply to "
        "compile (brackets, loops, conditions or a long chain of + or ~): split it into simpler "
        "pieces"
    )
    with pytest.raises(SystemCheckError, match=r"notifier\.E002"):
        call_command("check")
