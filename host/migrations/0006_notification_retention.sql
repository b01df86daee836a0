-- Notifications are swept by age once pushed and settled
-- (NOTIFICATION_RETENTION); a BRIN index finds the old ones cheaply, as rows
-- arrive in creation order.
CREATE INDEX notifications_created ON notifications USING brin (created_at);
