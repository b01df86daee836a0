-- The host's own tables. Read-model tables (view_*) are created at plugin load
-- from the views each plugin declares.

-- Which plugin writes each view: one writer per view.
CREATE TABLE views (
    name        text PRIMARY KEY,
    plugin      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The stream sequence each plugin has applied up to, committed with its views.
CREATE TABLE checkpoints (
    plugin          text PRIMARY KEY,
    seq             bigint NOT NULL DEFAULT 0,
    applied         bigint NOT NULL DEFAULT 0,
    dead_lettered   bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Events each plugin has applied, by eventId: a redelivery or a republish
-- under a new message id changes nothing.
CREATE TABLE processed_events (
    plugin      text NOT NULL,
    event_id    text NOT NULL,
    PRIMARY KEY (plugin, event_id)
);

-- Events a plugin could not apply, with the reason and the raw bytes.
CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    plugin       text NOT NULL,
    stream_seq   bigint NOT NULL,
    subject      text NOT NULL,
    event_id     text,
    patient_id   text,
    reason       text NOT NULL,
    raw          bytea NOT NULL,
    attempts     integer NOT NULL,
    status       text NOT NULL DEFAULT 'dead' CHECK (status IN ('dead', 'retrying', 'resolved')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (plugin, stream_seq)
);
CREATE INDEX dead_letters_retrying ON dead_letters (plugin) WHERE status = 'retrying';

-- The notification outbox: written in the batch's transaction, pushed after.
CREATE TABLE notifications (
    notification_id  uuid PRIMARY KEY,
    user_id          text NOT NULL,
    seq              bigint NOT NULL,
    event_id         text NOT NULL,
    patient_id       text NOT NULL,
    kind             text NOT NULL,
    priority         text NOT NULL CHECK (priority IN ('normal', 'urgent')),
    requires_ack     boolean NOT NULL,
    dedupe_key       text NOT NULL,
    body             jsonb NOT NULL,
    -- When the event that caused it happened; alerts are listed by it.
    event_at         timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    acknowledged_device text,
    UNIQUE (user_id, dedupe_key),
    UNIQUE (user_id, seq)
);
CREATE INDEX notifications_patient ON notifications (patient_id, event_at DESC);

-- The last notification seq handed out per user.
CREATE TABLE notification_seqs (
    user_id   text PRIMARY KEY,
    last_seq  bigint NOT NULL
);

-- HIPAA audit trail: API reads and audited domain events.
CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    user_id        text NOT NULL,
    action         text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    patient_id     text,
    ip_address     text,
    -- HTTP status of an API request; null for domain events.
    status         integer,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_patient ON audit_log (patient_id, at);
CREATE INDEX audit_log_user ON audit_log (user_id, at);
