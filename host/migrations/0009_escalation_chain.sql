-- Escalation in levels (ESCALATION_CHAIN, issue 15): every copy knows the
-- original it escalates and its level; an original knows the highest level
-- it reached. Acknowledging any copy settles the original and every copy.
ALTER TABLE notifications ADD COLUMN escalation_of uuid;
ALTER TABLE notifications ADD COLUMN escalation_level smallint NOT NULL DEFAULT 0;

-- The one level there was: copies are what an original's escalated_to names.
UPDATE notifications c SET escalation_of = o.notification_id, escalation_level = 1
FROM notifications o WHERE o.escalated_to = c.notification_id;
UPDATE notifications SET escalation_level = 1 WHERE escalated_to IS NOT NULL;

CREATE INDEX notifications_escalation_of ON notifications (escalation_of)
    WHERE escalation_of IS NOT NULL;
