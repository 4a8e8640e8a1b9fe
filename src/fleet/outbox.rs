//! The webhook outbox: deliveries a worker could not finish before it exited
//! (a receiver down for longer than the worker lives). Each queue message is
//! a [`PendingDelivery`] (no secrets: `secret_ref` is `tenant/name`, looked up
//! in the tenants file), visible when its next attempt is due. `meetbot
//! serve` replicas take them one at a time, make that attempt and either
//! finish the message or re-enqueue it for the next slot of the schedule, so
//! every message keeps its `webhook-id` across the whole ~75 h schedule.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tracing::{info, warn};

use super::tenants::Tenants;
use crate::azure::queue::{JobQueue, MAX_VISIBILITY};
use crate::config::Config;
use crate::webhook::{Decision, Delivery, PendingDelivery, Schedule, WebhookSecret, WebhookSender};

/// How long a taken outbox message stays invisible while one attempt runs.
const LEASE: Duration = Duration::from_secs(120);

/// Delivers the outbox forever.
pub async fn run(outbox: JobQueue, tenants: Tenants, cfg: Config) {
    if let Err(e) = outbox.create_if_missing().await {
        warn!(error = %e, "Webhook outbox queue not reachable yet.");
    }
    let sender = WebhookSender::new(cfg.url_policy()).with_timeout(cfg.webhooks.timeout);
    let schedule = Schedule {
        delays: cfg.webhooks.schedule.clone(),
        ..Schedule::standard()
    };
    let mut idle = Duration::from_secs(1);
    loop {
        match outbox.receive(LEASE).await {
            Ok(Some(m)) => {
                idle = Duration::from_secs(1);
                deliver_one(&outbox, m, &tenants, &sender, &schedule).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "Webhook outbox unavailable."),
        }
        tokio::time::sleep(idle).await;
        idle = (idle * 2).min(Duration::from_secs(10));
    }
}

fn secrets_for(tenants: &Tenants, secret_ref: &str) -> Option<Arc<[WebhookSecret]>> {
    let (tenant, name) = secret_ref.split_once('/')?;
    let s = tenants.get(tenant)?.webhook_secrets.get(name)?;
    WebhookSecret::parse(s.expose())
        .ok()
        .map(|s| Arc::from(vec![s]))
}

async fn deliver_one(
    outbox: &JobQueue,
    m: crate::azure::queue::Leased,
    tenants: &Tenants,
    sender: &WebhookSender,
    schedule: &Schedule,
) {
    let pending: PendingDelivery = match serde_json::from_str(&m.text) {
        Ok(p) => p,
        Err(_) => {
            warn!(message_id = %m.id, "Dropping an unreadable webhook outbox message.");
            let _ = outbox.delete(&m).await;
            return;
        }
    };
    let Some(secrets) = secrets_for(tenants, &pending.secret_ref) else {
        warn!(webhook_id = %pending.id, webhook = %pending.secret_ref, "Dropping a webhook delivery: its signing secret is no longer in the tenants file.");
        let _ = outbox.delete(&m).await;
        return;
    };
    let attempt = pending.attempt;
    let delivery = Delivery::resume(pending, secrets);
    let outcome = sender.attempt(&delivery).await;
    let unit: f64 = rand::thread_rng().gen();
    match schedule.decide(attempt, &outcome, unit) {
        Decision::Retry { attempt, after } => {
            let mut next = delivery.pending;
            next.attempt = attempt;
            next.due_unix_ms = crate::webhook::unix_ms_now() + after.as_millis() as u64;
            let text = serde_json::to_string(&next).unwrap_or_default();
            if outbox.send(&text, after.min(MAX_VISIBILITY)).await.is_ok() {
                let _ = outbox.delete(&m).await;
            }
            // If the send failed, the message reappears after LEASE and the
            // same attempt is made again (same webhook-id).
        }
        d => {
            let result = match &d {
                Decision::Delivered => "delivered".to_string(),
                Decision::Gone => "gone (410)".to_string(),
                Decision::GiveUp(g) => format!("gave up: {}", g.label()),
                Decision::Retry { .. } => "retry".to_string(),
            };
            // Named by its secret reference (tenant/name), never by URL or host.
            info!(webhook_id = %delivery.pending.id, webhook = %delivery.pending.secret_ref, attempt, %result, "Webhook outbox delivery finished.");
            let _ = outbox.delete(&m).await;
        }
    }
}
