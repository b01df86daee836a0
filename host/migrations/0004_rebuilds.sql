-- Blue/green rebuilds: what each plugin's live views were built from (its
-- subjects and declared views). A version that declares other views, or
-- reads other subjects, rebuilds them into shadow tables before it runs.
-- `generation` names the processed-event rows the live views go with: a
-- rebuild writes the next generation's, and its switch only moves this
-- number, however long the stream.
CREATE TABLE plugin_definitions (
    plugin      text PRIMARY KEY,
    definition  jsonb NOT NULL,
    generation  integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE processed_events ADD COLUMN generation integer NOT NULL DEFAULT 0;
ALTER TABLE processed_events DROP CONSTRAINT processed_events_pkey;
ALTER TABLE processed_events ADD PRIMARY KEY (plugin, generation, event_id);
