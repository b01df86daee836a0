-- Blue/green rebuilds: what each plugin's live views were built from (its
-- subjects and declared views). A version that declares other views, or
-- reads other subjects, rebuilds them into shadow tables before it runs.
CREATE TABLE plugin_definitions (
    plugin      text PRIMARY KEY,
    definition  jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
