"""At least one active administrator always remains: the database refuses to disable, demote or
delete the last one, whoever asks (the API, the command line, SQL by hand).

Revision ID: 0007
Revises: 0003
"""

from alembic import op

revision = "0007"
down_revision = "0006"

# SQLSTATE of the refusal (class FV: flowviz's own); services/lots/users.py maps it to LAST_ADMIN.
UPGRADE = r"""
CREATE FUNCTION flowviz_keep_an_admin() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.role = 'admin' AND NOT OLD.disabled
       AND (TG_OP = 'DELETE' OR NEW.role <> 'admin' OR NEW.disabled) THEN
        -- One such change at a time: two concurrent ones must not each count the other's admin.
        -- Taken before the count, which (a volatile function, read committed) sees what the
        -- change before it committed.
        PERFORM pg_advisory_xact_lock(hashtext('flowviz.users.admins'));
        IF NOT EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND NOT disabled AND id <> OLD.id) THEN
            RAISE EXCEPTION 'user % is the last active administrator', OLD.username
                USING ERRCODE = 'FV001', HINT = 'make another user admin first';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER users_keep_an_admin BEFORE UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION flowviz_keep_an_admin();
"""

DOWNGRADE = """
DROP TRIGGER users_keep_an_admin ON users;
DROP FUNCTION flowviz_keep_an_admin();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
