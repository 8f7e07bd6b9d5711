"""The audit trail moves from core to this app: the table stays (`core_auditevent`), its rows with
it; only Django's state and the content type (so auditors' permissions follow) change hands."""

from django.db import migrations, models


def _content_type_to_audit(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label="audit", model="auditevent").exists():
        content_type.objects.filter(app_label="core", model="auditevent").update(app_label="audit")


def _content_type_to_core(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label="core", model="auditevent").exists():
        content_type.objects.filter(app_label="audit", model="auditevent").update(app_label="core")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("core", "0002_oidc_identity"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditEvent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"),
                        ),
                        ("at", models.DateTimeField(db_index=True)),
                        (
                            "actor",
                            models.CharField(
                                help_text="owner:<pseudonym>, auditor:<user>, operator or scheduler", max_length=200
                            ),
                        ),
                        ("action", models.CharField(db_index=True, max_length=64)),
                        ("target_type", models.CharField(max_length=32)),
                        ("target", models.CharField(db_index=True, max_length=200)),
                        ("outcome", models.CharField(default="success", max_length=16)),
                        ("trace_id", models.CharField(blank=True, max_length=32)),
                        (
                            "details",
                            models.JSONField(
                                blank=True, default=dict, help_text="Counts, reasons and ids; never message content."
                            ),
                        ),
                    ],
                    options={
                        "db_table": "core_auditevent",
                        "ordering": ["-at", "-id"],
                        "indexes": [models.Index(fields=["target_type", "target"], name="core_audite_target__760797_idx")],
                    },
                ),
            ],
            database_operations=[],  # the table is there already, rows and all
        ),
        migrations.RunPython(_content_type_to_audit, _content_type_to_core),
    ]
