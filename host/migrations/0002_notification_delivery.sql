-- Delivery of the notification outbox.

-- When the notification was handed to NATS for every instance to push;
-- rows left NULL by a crash between commit and push are swept and pushed.
ALTER TABLE notifications ADD COLUMN pushed_at timestamptz;
CREATE INDEX notifications_unpushed ON notifications (created_at) WHERE pushed_at IS NULL;

-- When an unacknowledged urgent notification was escalated to the covering
-- role, and the notification that escalation created.
ALTER TABLE notifications ADD COLUMN escalated_at timestamptz;
ALTER TABLE notifications ADD COLUMN escalated_to uuid;

-- Urgent notifications waiting for an acknowledgement: resent and escalated.
CREATE INDEX notifications_unacknowledged ON notifications (user_id, seq)
    WHERE requires_ack AND acknowledged_at IS NULL;
