//! Delivers the purge outbox: claims due purges, sends each target its share (batched by
//! `drivers`), deletes what every target acknowledged, and schedules the rest with
//! exponential backoff until `edge.purge_attempts` run out.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::EdgeConfig;
use crate::metrics::EdgeMetrics;
use crate::store::{PendingPurge, Store, StoreError, now_ms};

/// Purges claimed per pass.
const BATCH: u32 = 50;

pub(crate) struct Worker {
    client: reqwest::Client,
    config: EdgeConfig,
    metrics: EdgeMetrics,
    /// The outbox's queued count already added to the metric.
    queued_seen: u64,
}

impl Worker {
    pub(crate) fn new(config: EdgeConfig, metrics: EdgeMetrics) -> Result<Worker, String> {
        let client = reqwest::Client::builder()
            .timeout(config.purge_timeout)
            .connect_timeout(config.purge_timeout)
            // A purge endpoint that redirects is misconfigured; following it would send the
            // token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("imgnode/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        // Every target's series from the start, at zero: a rate over them works at once and
        // an alert on them has a series to watch.
        for target in &config.purge {
            for counter in [
                &metrics.delivered_total,
                &metrics.failed_total,
                &metrics.given_up_total,
            ] {
                counter.with_label_values(&[&target.name]);
            }
        }
        Ok(Worker {
            client,
            config,
            metrics,
            queued_seen: 0,
        })
    }

    /// Delivers every purge due now; returns how many were claimed.
    pub(crate) async fn drain(&mut self, store: &Store) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.pass(store).await?;
            total += n;
            if n < BATCH as usize {
                break;
            }
        }
        self.refresh_gauges(store).await?;
        Ok(total)
    }

    /// One claim-and-deliver round over at most [`BATCH`] purges.
    async fn pass(&mut self, store: &Store) -> Result<usize, StoreError> {
        let queued = store.outbox().queued_total();
        self.metrics
            .queued_total
            .inc_by(queued.saturating_sub(self.queued_seen));
        self.queued_seen = queued;
        // Long enough for every request of the batch to time out once, so a slow target never
        // makes a second node deliver the same rows; a node that dies mid-pass leaves them to
        // another one after this.
        let lease = self.config.purge_timeout * (BATCH + 4) * 2;
        let claimed = store
            .claim_purges(BATCH, i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
            .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        // Per purge: the targets that failed this time, with their errors.
        let mut failed: HashMap<&str, Vec<(String, String)>> = HashMap::new();
        for target in &self.config.purge {
            let owing: Vec<&PendingPurge> = claimed
                .iter()
                .filter(|p| p.targets.contains(&target.name))
                .collect();
            if owing.is_empty() {
                continue;
            }
            let results = super::drivers::deliver(&self.client, target, &owing).await;
            for (p, result) in owing.iter().zip(results) {
                match result {
                    Ok(()) => self
                        .metrics
                        .delivered_total
                        .with_label_values(&[&target.name])
                        .inc(),
                    Err(e) => failed
                        .entry(p.id.as_str())
                        .or_default()
                        .push((target.name.clone(), e)),
                }
            }
        }
        for p in &claimed {
            for t in &p.targets {
                if !self.config.purge.iter().any(|c| &c.name == t) {
                    tracing::warn!(
                        target_name = %t,
                        purge = %p.id,
                        "edge purge owed to a target no longer configured: dropped for it"
                    );
                }
            }
            let errors = failed.remove(p.id.as_str()).unwrap_or_default();
            let owed: Vec<String> = errors.iter().map(|(t, _)| t.clone()).collect();
            let attempts = p.attempts + 1;
            let give_up = !owed.is_empty() && attempts >= self.config.purge_attempts;
            let message = (!errors.is_empty()).then(|| {
                errors
                    .iter()
                    .map(|(t, e)| format!("{t}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            for (t, e) in &errors {
                if give_up {
                    self.metrics.given_up_total.with_label_values(&[t]).inc();
                    tracing::error!(
                        target_name = %t,
                        account = %p.account,
                        tags = %p.tags.join(" "),
                        reason = %p.reason,
                        attempts,
                        error = %e,
                        "edge purge given up: the CDN may still serve these tags until it expires them"
                    );
                } else {
                    self.metrics.failed_total.with_label_values(&[t]).inc();
                    tracing::warn!(target_name = %t, attempts, error = %e, "edge purge failed; will retry");
                }
            }
            let next = now_ms().saturating_add(
                i64::try_from(self.backoff(attempts).as_millis()).unwrap_or(i64::MAX),
            );
            store
                .finish_purge_attempt(&p.id, &owed, message.as_deref(), next, give_up)
                .await?;
        }
        Ok(claimed.len())
    }

    /// Wait before attempt `attempts + 1`: the base doubled per failed attempt, capped.
    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        (self.config.purge_retry_base * factor).min(self.config.purge_retry_max)
    }

    async fn refresh_gauges(&self, store: &Store) -> Result<(), StoreError> {
        let (pending, oldest) = store.pending_purge_stats().await?;
        self.metrics.pending.set(pending);
        let age = oldest.map_or(0, |t| (now_ms() - t).max(0) / 1000);
        self.metrics.oldest_pending_seconds.set(age);
        Ok(())
    }
}
