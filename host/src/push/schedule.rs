//! What runs on a clock: resending unacknowledged urgent notifications,
//! escalating them, and pushing notifications a stopped host left behind.

use std::time::Duration;

use super::Notifier;

/// How often escalations and unpushed notifications are looked for.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How old an unpushed notification must be before the sweep pushes it, so
/// a push still in flight is not doubled.
pub const SWEEP_GRACE: Duration = Duration::from_secs(10);

/// Every `RESEND_INTERVAL`, sends unacknowledged urgent notifications again
/// to the devices connected to this instance.
pub async fn resend(notifier: Notifier) {
    let mut ticks = tokio::time::interval(notifier.config().resend_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(e) = notifier.resend_unacknowledged().await {
            tracing::warn!(
                error = format!("{e:#}"),
                "resending unacknowledged notifications"
            );
        }
    }
}

/// Every second, escalates urgent notifications unacknowledged past a
/// level of the escalation chain and pushes what was committed but never pushed.
pub async fn escalate_and_sweep(notifier: Notifier) {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = notifier.escalate_and_sweep().await {
            tracing::warn!(
                error = format!("{e:#}"),
                "escalating or sweeping notifications"
            );
        }
    }
}
