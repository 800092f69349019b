"""The marketing roles: Marketers prepare campaigns and segments; a Marketing lead also
approves them (someone other than who prepared it). Support may view campaigns, not edit."""

from django.db import migrations

from notifier.migrations._permissions import grant

EDITABLE = ["segment", "segmentmember", "audiencethresholds", "campaign", "campaignstep",
            "stepvariant", "varianttemplate"]
VIEW_ONLY = ["holdout", "conversion", "campaignstats"]


def marketer_codenames() -> list[str]:
    return ([f"{action}_{model}" for model in EDITABLE
             for action in ("add", "change", "delete", "view")]
            + [f"view_{model}" for model in VIEW_ONLY])


def create_roles(apps, schema_editor):
    for group in ("Marketer", "Marketing lead"):
        grant(apps, group=group, app_label="campaigns", codenames=marketer_codenames())
        grant(apps, group=group, app_label="notifier",
              codenames=["view_notificationtype", "view_routingrule"])
    grant(apps, group="Marketing lead", app_label="campaigns", codenames=["approve_campaign"])
    grant(apps, group="Support", app_label="campaigns",
          codenames=[f"view_{m}" for m in EDITABLE + VIEW_ONLY if m != "segmentmember"])


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(
        name__in=["Marketer", "Marketing lead"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0002_segments_campaigns_steps_variants"),
        ("notifier", "0009_interest_tags_gin"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
