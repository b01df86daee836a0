-- Blue/green rebuilds: what each plugin's live views were built from (its
-- subjects and declared views). A version that declares other views, or
-- reads other subjects, rebuilds them into shadow tables before it runs.
-- `generation` names the processed-event rows the live views go with
-- (kept under `<plugin>#<generation>`, plain `<plugin>` for 0): a rebuild
-- writes the next generation's, and its switch only moves this number,
-- however long the stream.
CREATE TABLE plugin_definitions (
    plugin      text PRIMARY KEY,
    definition  jsonb NOT NULL,
    generation  integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
