"""Audit events name the owner they concern, so an auditor can find all of one owner's events
(including the scheduler's archiving and purging of their sessions)."""

from django.db import migrations, models
from django.db.models.functions import Substr


def _fill_owner(apps, schema_editor):
    event = apps.get_model("audit", "AuditEvent")
    event.objects.filter(target_type="owner").update(owner=models.F("target"))
    event.objects.filter(owner="", actor__startswith="owner:").update(owner=Substr("actor", len("owner:") + 1))


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="owner",
            field=models.CharField(
                blank=True,
                db_index=True,
                default="",
                help_text="The pseudonym of the owner it concerns, when one does",
                max_length=64,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(_fill_owner, migrations.RunPython.noop),
    ]
