"""A lower-cased search column with one trigram index, replacing the two UPPER() indexes."""

from django.db import migrations, models


def fill(apps, schema_editor) -> None:
    model = apps.get_model("registry", "RegisteredModel")
    for row in model.objects.only("pk", "name", "description").iterator():
        model.objects.filter(pk=row.pk).update(
            search_text=f"{row.name}\n{row.description}".lower())


def index(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS registry_model_name_trgm")
    schema_editor.execute("DROP INDEX IF EXISTS registry_model_description_trgm")
    schema_editor.execute("CREATE INDEX IF NOT EXISTS registry_model_search_trgm ON "
                          "registry_registeredmodel USING gin (search_text gin_trgm_ops)")


def unindex(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS registry_model_search_trgm")


class Migration(migrations.Migration):
    dependencies = [("registry", "0002_search_trigram_indexes")]
    operations = [
        migrations.AddField(
            model_name="registeredmodel", name="search_text",
            field=models.TextField(blank=True, editable=False,
                                   help_text="Lower-case name and description, for ?search=."),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.RunPython(index, unindex),
    ]
