//! Usage metering and quotas: per account and calendar month (UTC), counted in memory and
//! added to the database on an interval (`auth.usage_flush_interval`) and at shutdown.
//!
//! Owns the counters (uploads, API requests, delivered bytes, renders), the quota checks of
//! the account's plan, and the flush. No request waits for a database write: a crash loses at
//! most one interval of counts; a failed flush puts its counts back to be retried, so nothing
//! is counted twice. Must never decide anything but quota answers.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::Plan;
use crate::store::{Backend, Store, StoreError, UsageCounts, now_unix};

/// `YYYY-MM` of a unix time (UTC).
pub fn period_of(unix: i64) -> String {
    // Every delivered byte is metered under its period: the last day's answer is kept per
    // thread rather than formatting a date per request.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let day = unix.div_euclid(86_400);
    LAST.with_borrow_mut(|(last_day, period)| {
        if *last_day != day {
            let t = time::OffsetDateTime::from_unix_timestamp(unix)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            *period = format!("{:04}-{:02}", t.year(), u8::from(t.month()));
            *last_day = day;
        }
        period.clone()
    })
}

/// First second of `period`'s month and first second of the next one (unix).
pub(crate) fn period_bounds(period: &str) -> (i64, i64) {
    let parse = || -> Option<(i32, u8)> {
        let (y, m) = period.split_once('-')?;
        Some((y.parse().ok()?, m.parse().ok()?))
    };
    let (year, month) = parse().unwrap_or((1970, 1));
    let start = |y: i32, m: u8| {
        time::Month::try_from(m)
            .ok()
            .and_then(|m| time::Date::from_calendar_date(y, m, 1).ok())
            .map_or(0, |d| d.midnight().assume_utc().unix_timestamp())
    };
    let (ny, nm) = if month >= 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    (start(year, month), start(ny, nm))
}

#[derive(Default)]
struct Inner {
    /// Counted since the last flush, by (account, period).
    pending: HashMap<(String, String), UsageCounts>,
    /// What the database held at the last read or flush, by (account, period).
    base: HashMap<(String, String), UsageCounts>,
}

#[derive(Default)]
pub struct UsageMeter {
    inner: Mutex<Inner>,
    /// Held by a flush for its whole run, and by a load of a month from the database, so a
    /// load never sees the database half-way through a flush (counted twice, or not at all).
    flushing: tokio::sync::Mutex<()>,
}

impl UsageMeter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts something for `account` in the current month.
    pub fn record(&self, account: &str, count: impl FnOnce(&mut UsageCounts)) {
        let key = (account.to_string(), period_of(now_unix()));
        count(self.lock().pending.entry(key).or_default());
    }

    /// The account's counts this month: the database's plus what is not flushed yet.
    pub async fn current(&self, store: &Store, account: &str) -> Result<UsageCounts, StoreError> {
        let key = (account.to_string(), period_of(now_unix()));
        if !self.lock().base.contains_key(&key) {
            let _flush = self.flushing.lock().await;
            if !self.lock().base.contains_key(&key) {
                let loaded = store.usage(account, &key.1).await?;
                self.lock().base.insert(key.clone(), loaded);
            }
        }
        let inner = self.lock();
        let mut total = inner.base.get(&key).copied().unwrap_or_default();
        if let Some(pending) = inner.pending.get(&key) {
            total.add(pending);
        }
        Ok(total)
    }

    /// Adds what was counted to the database. A count moves from `pending` to `base` only
    /// once its write succeeded, in one step, so readers never miss or double it; counts of a
    /// failed write stay pending for the next flush. `base` becomes the database's totals, so
    /// with several nodes each one sees the others' flushed counts after its next flush.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let _flush = self.flushing.lock().await;
        let snapshot: Vec<_> = self
            .lock()
            .pending
            .iter()
            .filter(|(_, delta)| !delta.is_zero())
            .map(|(key, delta)| (key.clone(), *delta))
            .collect();
        let mut first_error = None;
        let mut written = std::collections::HashSet::new();
        for (key, delta) in snapshot {
            match store.add_usage(&key.0, &key.1, &delta).await {
                Ok(totals) => {
                    let mut inner = self.lock();
                    if let Some(pending) = inner.pending.get_mut(&key) {
                        pending.sub(&delta);
                        if pending.is_zero() {
                            inner.pending.remove(&key);
                        }
                    }
                    // Only months already read are kept; others load fresh when asked.
                    if let Some(base) = inner.base.get_mut(&key) {
                        *base = totals.unwrap_or_default();
                    }
                    written.insert(key);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Past months are not needed in memory any more; the months kept but not written
        // just now are read again (other nodes may have added to them).
        let now = period_of(now_unix());
        let stale: Vec<_> = {
            let mut inner = self.lock();
            inner.base.retain(|(_, period), _| *period == now);
            if store.backend() == Backend::Sqlite {
                // One node: nobody else adds to these rows.
                Vec::new()
            } else {
                inner
                    .base
                    .keys()
                    .filter(|k| !written.contains(*k))
                    .cloned()
                    .collect()
            }
        };
        for key in stale {
            match store.usage(&key.0, &key.1).await {
                Ok(counts) => {
                    self.lock().base.insert(key, counts);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Drops an erased account's counters (its rows are deleted by the caller).
    pub(crate) fn forget(&self, account: &str) {
        let mut inner = self.lock();
        inner.pending.retain(|(a, _), _| a != account);
        inner.base.retain(|(a, _), _| a != account);
    }
}

/// Which monthly limit a request is about to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quota {
    Uploads,
    ApiRequests,
    Transformations,
    /// Delivered image bytes (`max_bandwidth_per_month`).
    Bandwidth,
}

/// A plan's limit that a request would pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QuotaError {
    /// A monthly quota is used up (`429 QUOTA_EXCEEDED`).
    #[error("the monthly quota of {limit} {what} is used up")]
    Monthly { limit: u64, what: &'static str },
    /// Storing the upload would pass the plan's storage (`413 PAYLOAD_TOO_LARGE`).
    #[error("this upload would exceed the storage quota of {limit} bytes")]
    Storage { limit: u64 },
}

/// [`QuotaError::Monthly`] when `used` has reached the plan's limit for `quota`.
pub(crate) fn check(plan: &Plan, quota: Quota, used: &UsageCounts) -> Result<(), QuotaError> {
    let (limit, used, what) = match quota {
        Quota::Uploads => (plan.max_uploads_per_month, used.uploads, "uploads"),
        Quota::ApiRequests => (
            plan.max_api_requests_per_month,
            used.api_requests,
            "API requests",
        ),
        Quota::Transformations => (
            plan.max_transformations_per_month,
            used.transformations,
            "transformations",
        ),
        Quota::Bandwidth => (
            plan.max_bandwidth_per_month,
            used.bandwidth_bytes,
            "bytes of bandwidth",
        ),
    };
    match limit {
        Some(limit) if used >= limit => Err(QuotaError::Monthly { limit, what }),
        _ => Ok(()),
    }
}

/// [`QuotaError::Storage`] when storing `adding` more bytes would exceed the plan's storage.
pub(crate) fn check_storage(plan: &Plan, used_bytes: u64, adding: u64) -> Result<(), QuotaError> {
    match plan.max_storage_bytes {
        Some(limit) if used_bytes.saturating_add(adding) > limit => {
            Err(QuotaError::Storage { limit })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(period_of(0), "1970-01");
        assert_eq!(period_of(1_795_987_515), "2026-11");
        let (start, end) = period_bounds("2026-12");
        assert_eq!(period_of(start), "2026-12");
        assert_eq!(period_of(start - 1), "2026-11");
        assert_eq!(period_of(end), "2027-01");
        assert_eq!(period_of(end - 1), "2026-12");
    }

    #[test]
    fn quotas() {
        let plan = Plan {
            max_uploads_per_month: Some(2),
            max_storage_bytes: Some(100),
            max_bandwidth_per_month: None,
            max_api_requests_per_month: None,
            max_transformations_per_month: Some(0),
            requests_per_minute: 1,
            private_images: true,
            signed_urls: true,
            presets: true,
            max_presets: 50,
        };
        let mut used = UsageCounts::default();
        assert!(check(&plan, Quota::Uploads, &used).is_ok());
        used.uploads = 2;
        let e = check(&plan, Quota::Uploads, &used).unwrap_err();
        assert_eq!(
            e,
            QuotaError::Monthly {
                limit: 2,
                what: "uploads"
            }
        );
        assert!(check(&plan, Quota::ApiRequests, &used).is_ok());
        assert!(check(&plan, Quota::Transformations, &UsageCounts::default()).is_err());
        // Unlimited bandwidth, then a limit reached exactly.
        used.bandwidth_bytes = u64::MAX;
        assert!(check(&plan, Quota::Bandwidth, &used).is_ok());
        let metered = Plan {
            max_bandwidth_per_month: Some(1000),
            ..plan.clone()
        };
        used.bandwidth_bytes = 999;
        assert!(check(&metered, Quota::Bandwidth, &used).is_ok());
        used.bandwidth_bytes = 1000;
        let e = check(&metered, Quota::Bandwidth, &used).unwrap_err();
        assert!(matches!(e, QuotaError::Monthly { limit: 1000, .. }));
        assert!(e.to_string().contains("bandwidth"), "{e}");
        assert!(check_storage(&plan, 60, 40).is_ok());
        assert_eq!(
            check_storage(&plan, 60, 41).unwrap_err(),
            QuotaError::Storage { limit: 100 }
        );
    }

    #[tokio::test]
    async fn counts_survive_a_flush_and_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::store::testing::store_url(dir.path(), "u.db").await;
        let store = Store::open(&url).await.unwrap();
        store.create_account("a", "free").await.unwrap();
        let meter = UsageMeter::default();
        meter.record("a", |u| u.uploads += 2);
        meter.record("a", |u| u.bandwidth_bytes += 1000);
        assert_eq!(meter.current(&store, "a").await.unwrap().uploads, 2);
        meter.flush(&store).await.unwrap();
        meter.record("a", |u| u.uploads += 1);
        let now = meter.current(&store, "a").await.unwrap();
        assert_eq!((now.uploads, now.bandwidth_bytes), (3, 1000));
        meter.flush(&store).await.unwrap();
        // A fresh meter (a restart) reads the same from the database.
        let fresh = UsageMeter::default();
        assert_eq!(fresh.current(&store, "a").await.unwrap().uploads, 3);
        // Counts of an account that is gone are dropped, not written.
        meter.record("gone", |u| u.uploads += 1);
        meter.flush(&store).await.unwrap();
        assert_eq!(store.usage_history("gone").await.unwrap(), []);
        store.close().await;
    }
}
