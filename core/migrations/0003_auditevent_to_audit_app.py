"""AuditEvent now belongs to the audit app (audit/migrations/0001_initial.py): core forgets the
model without touching its table."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0002_oidc_identity"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuditEvent")],
            database_operations=[],  # the table is the audit app's now
        ),
    ]
