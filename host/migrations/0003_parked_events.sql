-- Poisoned patients: once a plugin fails on one of a patient's events, that
-- patient's later events for the plugin wait here, in stream order, until
-- the dead letter is re-driven or discarded; other patients keep flowing.

-- Whether a dead letter parks its patient's later events: plugin failures
-- do; malformed input (nothing to apply) does not.
ALTER TABLE dead_letters ADD COLUMN poisons boolean NOT NULL DEFAULT false;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_status_check;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_status_check
    CHECK (status IN ('dead', 'retrying', 'resolved', 'discarded'));
CREATE INDEX dead_letters_poisoning ON dead_letters (plugin, patient_id)
    WHERE poisons AND status IN ('dead', 'retrying');

CREATE TABLE parked_events (
    plugin      text NOT NULL,
    stream_seq  bigint NOT NULL,
    subject     text NOT NULL,
    patient_id  text NOT NULL,
    raw         bytea NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin, stream_seq)
);
CREATE INDEX parked_events_patient ON parked_events (plugin, patient_id, stream_seq);
