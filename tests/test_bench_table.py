"""The bench's table: a million-user run of the in-app + email mix alone (`--mixes
inapp+email`) has no in-app-only or email-only figures, and the table leaves their rows out
instead of failing after the run (which would lose every figure)."""

from __future__ import annotations

from io import StringIO

from django.core.management.base import OutputWrapper

from notifier_site.bench_profile import AREAS
from notifier_site.management.commands.bench import Command

ONE_MIX = {
    "campaign_users": 1_000_000,
    "campaign_recipients_per_s": 1800.0,
    "naive_recipients_per_s": 140.0,
    "campaign_ratio": 12.86,
    "thin_naive_recipients_per_s": 420.0,
    "campaign_ratio_thin": 4.29,
    "campaign_recipients_per_s_10k": 2400.0,
    "peak_worker_rss_mb_10k": 140.0,
    "peak_worker_rss_mb_1000k": 150.0,
    "rss_ratio": 1.071,
    "e2e_inapp_ms_p50_during_fanout": 7.0,
    "e2e_inapp_ms_p99_during_fanout": 20.0,
    "e2e_samples_during_fanout": 0,
}


def table_of(result: dict[str, object]) -> str:
    out = StringIO()
    command = Command()
    command.stdout = OutputWrapper(out)
    command.table(result)
    return out.getvalue()


def test_one_mix_table_has_its_rows_and_none_of_the_others() -> None:
    text = table_of(ONE_MIX)
    assert "campaign fan-out, 1000000 users" in text
    assert "thin naive baseline, inapp+email" in text
    assert "150 MB" in text and "1.07x" in text
    assert "inapp, 1000000 users" not in text and "thin naive baseline, email" not in text


def test_all_mixes_table_has_each_mix() -> None:
    result = dict(ONE_MIX)
    for prefix in ("inapp_", "email_"):
        result |= {
            f"{prefix}campaign_recipients_per_s": 3000.0,
            f"naive_{prefix}recipients_per_s": 300.0,
            f"{prefix}campaign_ratio": 10.0,
            f"thin_naive_{prefix}recipients_per_s": 600.0,
            f"{prefix}campaign_ratio_thin": 5.0,
        }
    text = table_of(result)
    assert "campaign fan-out, inapp, 1000000 users" in text
    assert "campaign fan-out, email, 1000000 users" in text


WORKFLOWS = {
    "digest_events": 20000,
    "digest_collect_events_per_s": 1200.0,
    "digest_flush_events_per_s": 2500.0,
    "digest_flush_digests_per_s": 600.0,
    "escalation_steps": 3000,
    "escalation_load_recipients": 40000,
    "escalation_step_lateness_ms_p50": 22.1,
    "escalation_step_lateness_ms_p99": 23.7,
    "escalation_step_lateness_ms_max": 31.0,
    "topic_followers": 200000,
    "topic_subscribe_per_s": 19000.0,
    "topic_fanout_recipients_per_s": 4100.0,
    "topic_peak_worker_rss_mb": 125.0,
}


def test_a_workflows_only_run_has_the_workflow_rows_alone() -> None:
    text = table_of(WORKFLOWS)
    assert "digest flush (as the beat task)" in text and "2500 events/s" in text
    assert "22 / 24 ms" in text
    assert "topic fan-out, 200000 followers" in text and "4100 rcpt/s" in text
    assert "campaign fan-out" not in text and "naive baseline" not in text


def test_other_phases_alone_have_no_workflow_rows() -> None:
    assert "digest" not in table_of(ONE_MIX)


def test_the_large_email_row_shows_both_stores_and_is_left_out_without_lz4() -> None:
    profile = {
        "profile_batch_users": 1000,
        "profile_batch_ms_per_recipient": 0.6,
        "profile_batch_pct": dict.fromkeys(AREAS, 10.0),
    }
    large = {
        "large_email_html_bytes": 36451,
        "large_email_ms_per_recipient_pglz": 1.29,
        "large_email_ms_per_recipient_lz4": 1.104,
        "large_email_lz4_speedup": 1.17,
    }
    with_lz4 = table_of(profile | large)
    assert "email of 36 KB, pglz / LZ4" in with_lz4
    assert "1.290 / 1.104 ms/rcpt" in with_lz4 and "LZ4 1.17x" in with_lz4
    without = table_of(profile)
    assert "pglz / LZ4" not in without
