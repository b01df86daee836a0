-- Retention of processed events: each row records the day it was applied,
-- and a BRIN index (tiny, and cheap to keep as rows arrive in time order)
-- lets the host's sweep find the rows past PROCESSED_RETENTION without
-- touching the lookups by (plugin, event_id). Existing rows count as
-- applied today (a constant default: no rewrite of the table).
ALTER TABLE processed_events ADD COLUMN day date NOT NULL DEFAULT current_date;
CREATE INDEX processed_events_day ON processed_events USING brin (day);
