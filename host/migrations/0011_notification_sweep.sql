-- Issue 16: every host sweeps the outbox for notifications a stopped host
-- committed and never pushed. A sweep takes each one by setting swept_at in
-- the same statement that finds it (SKIP LOCKED), so one host pushes it, not
-- every host; if that host stops too before marking it pushed, the next
-- sweep after the grace takes it again.
ALTER TABLE notifications ADD COLUMN swept_at timestamptz;
