"""Terminal states never change, enforced by the database, which also logs every transition."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION avatars_avatar_status_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO avatars_avatartransition (avatar_id, from_status, to_status, at)
        VALUES (NEW.id, NULL, NEW.status, clock_timestamp());
        RETURN NEW;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF OLD.status IN ('succeeded', 'failed', 'canceled') THEN
            RAISE EXCEPTION 'avatar % is % and can not become %', OLD.id, OLD.status, NEW.status
                USING ERRCODE = 'restrict_violation';
        END IF;
        INSERT INTO avatars_avatartransition (avatar_id, from_status, to_status, at)
        VALUES (NEW.id, OLD.status, NEW.status, clock_timestamp());
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER avatars_avatar_status_insert
    AFTER INSERT ON avatars_avatar
    FOR EACH ROW EXECUTE FUNCTION avatars_avatar_status_guard();
CREATE TRIGGER avatars_avatar_status_update
    BEFORE UPDATE OF status ON avatars_avatar
    FOR EACH ROW EXECUTE FUNCTION avatars_avatar_status_guard();
"""
DROP = """
DROP TRIGGER IF EXISTS avatars_avatar_status_insert ON avatars_avatar;
DROP TRIGGER IF EXISTS avatars_avatar_status_update ON avatars_avatar;
DROP FUNCTION IF EXISTS avatars_avatar_status_guard();
"""


def _on_postgresql(sql):
    def run(apps, schema_editor):
        # SQLite (local runs only) goes without the guard; tests and production use PostgreSQL.
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("avatars", "0003_avatar_transitions")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP))]
