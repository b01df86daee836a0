-- The audit trail is append-only and tamper-evident (issue 14).
--
-- * `detail` says why a request was refused, what a socket was replayed,
--   where a deploy came from.
-- * Every row carries `hash` = sha256(`prev_hash` || its canonical form),
--   `prev_hash` being the hash of the row before it, so a row edited or
--   removed behind the triggers' back breaks the chain `projector audit
--   verify` walks. Ids are given out under one lock, in commit order, with
--   no gaps: a missing id is a removed row.
-- * A trigger refuses UPDATE, DELETE and TRUNCATE.

ALTER TABLE audit_log ADD COLUMN detail text;
ALTER TABLE audit_log ADD COLUMN prev_hash bytea;
ALTER TABLE audit_log ADD COLUMN hash bytea;
ALTER TABLE audit_log ALTER COLUMN id DROP DEFAULT;
DROP SEQUENCE IF EXISTS audit_log_id_seq;

-- The canonical form of a row that its hash covers: a JSON array (which
-- tells a null from an empty string), the time in microseconds since the
-- epoch (independent of the session's time zone).
CREATE FUNCTION audit_log_canonical(a audit_log) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_array(
        a.id, a.user_id, a.action, a.resource_type, a.resource_id, a.patient_id,
        a.ip_address, a.status,
        (extract(epoch FROM a.at) * 1000000)::bigint,
        a.detail
    )::text
$$;

-- Links a new row to the chain: waits for the writers before it to commit
-- (a transaction-level advisory lock, class `AUD`), then takes the next id
-- and the last row's hash.
CREATE FUNCTION audit_log_link() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last audit_log;
BEGIN
    PERFORM pg_advisory_xact_lock(x'00415544'::int, 0);
    SELECT * INTO last FROM audit_log ORDER BY id DESC LIMIT 1;
    NEW.id := coalesce(last.id, 0) + 1;
    NEW.prev_hash := coalesce(last.hash, ''::bytea);
    NEW.hash := sha256(NEW.prev_hash || convert_to(audit_log_canonical(NEW), 'UTF8'));
    RETURN NEW;
END
$$;

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- The rows written before the chain existed, chained in id order.
DO $$
DECLARE
    r audit_log;
    prev bytea := ''::bytea;
    n bigint := 0;
BEGIN
    CREATE TEMP TABLE audit_log_old ON COMMIT DROP AS SELECT * FROM audit_log ORDER BY id;
    DELETE FROM audit_log;
    FOR r IN SELECT * FROM audit_log_old ORDER BY id LOOP
        n := n + 1;
        r.id := n;
        r.prev_hash := prev;
        r.hash := sha256(prev || convert_to(audit_log_canonical(r), 'UTF8'));
        INSERT INTO audit_log SELECT r.*;
        prev := r.hash;
    END LOOP;
END
$$;

ALTER TABLE audit_log ALTER COLUMN prev_hash SET NOT NULL;
ALTER TABLE audit_log ALTER COLUMN hash SET NOT NULL;

CREATE TRIGGER audit_log_link BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_link();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
