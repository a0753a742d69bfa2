"""Trigram indexes so ``?search=`` (``icontains`` on name and description) uses an index on
PostgreSQL instead of scanning every model. Django compiles ``icontains`` to
``UPPER(col::text) LIKE UPPER(%s)``, hence the expression indexes. No-op on SQLite."""

from django.db import migrations

INDEXES = {
    "registry_model_name_trgm": "UPPER(name::text)",
    "registry_model_description_trgm": "UPPER(description::text)",
}


def create(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, expression in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON registry_registeredmodel "
                              f"USING gin (({expression}) gin_trgm_ops)")


def drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
