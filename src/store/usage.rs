//! Monthly usage rows and the audit log.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// Counters of one account in one month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub uploads: u64,
    pub api_requests: u64,
    pub bandwidth_bytes: u64,
    pub transformations: u64,
}

impl UsageCounts {
    pub(crate) fn add(&mut self, other: &UsageCounts) {
        self.uploads += other.uploads;
        self.api_requests += other.api_requests;
        self.bandwidth_bytes += other.bandwidth_bytes;
        self.transformations += other.transformations;
    }

    pub(crate) fn sub(&mut self, other: &UsageCounts) {
        self.uploads = self.uploads.saturating_sub(other.uploads);
        self.api_requests = self.api_requests.saturating_sub(other.api_requests);
        self.bandwidth_bytes = self.bandwidth_bytes.saturating_sub(other.bandwidth_bytes);
        self.transformations = self.transformations.saturating_sub(other.transformations);
    }

    pub(crate) fn is_zero(&self) -> bool {
        *self == UsageCounts::default()
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: String,
    pub at: i64,
    pub account: Option<String>,
    /// `key:{id}`, `jwt:{subject}` or `operator`.
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub client_ip: Option<String>,
    /// The HTTP status answered.
    pub outcome: i64,
}

/// Filters of `GET /admin/v1/audit`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditFilter {
    pub(crate) account: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) since: Option<i64>,
    pub(crate) until: Option<i64>,
    pub(crate) limit: u32,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(r: &AnyRow, col: &str) -> Result<u64, StoreError> {
    Ok(u64::try_from(r.try_get::<i64, _>(col)?).unwrap_or(0))
}

fn counts_from_row(r: &AnyRow) -> Result<UsageCounts, StoreError> {
    Ok(UsageCounts {
        uploads: to_u64(r, "uploads")?,
        api_requests: to_u64(r, "api_requests")?,
        bandwidth_bytes: to_u64(r, "bandwidth_bytes")?,
        transformations: to_u64(r, "transformations")?,
    })
}

impl Store {
    /// Adds `delta` to the account's row of `period` (`YYYY-MM`) and returns the row's totals
    /// (every node's flushes included). Nothing is written for an account that is gone or
    /// being erased (late counts must not re-create its usage): then `None`.
    pub async fn add_usage(
        &self,
        account: &str,
        period: &str,
        delta: &UsageCounts,
    ) -> Result<Option<UsageCounts>, StoreError> {
        let row = sqlx::query(
            "INSERT INTO usage (account, period, uploads, api_requests, bandwidth_bytes,
                                transformations)
             SELECT $1, $2, $3, $4, $5, $6 FROM accounts
             WHERE name = $1 AND status <> 'erasing'
             ON CONFLICT (account, period) DO UPDATE SET
                uploads = usage.uploads + excluded.uploads,
                api_requests = usage.api_requests + excluded.api_requests,
                bandwidth_bytes = usage.bandwidth_bytes + excluded.bandwidth_bytes,
                transformations = usage.transformations + excluded.transformations
             RETURNING uploads, api_requests, bandwidth_bytes, transformations",
        )
        .bind(account)
        .bind(period)
        .bind(to_i64(delta.uploads))
        .bind(to_i64(delta.api_requests))
        .bind(to_i64(delta.bandwidth_bytes))
        .bind(to_i64(delta.transformations))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| counts_from_row(&r)).transpose()
    }

    pub async fn usage(&self, account: &str, period: &str) -> Result<UsageCounts, StoreError> {
        let row = sqlx::query(
            "SELECT uploads, api_requests, bandwidth_bytes, transformations
             FROM usage WHERE account = $1 AND period = $2",
        )
        .bind(account)
        .bind(period)
        .fetch_optional(&self.pool)
        .await?;
        row.map_or(Ok(UsageCounts::default()), |r| counts_from_row(&r))
    }

    /// Every usage row of an account, oldest first: `(period, counts)`.
    pub(crate) async fn usage_history(
        &self,
        account: &str,
    ) -> Result<Vec<(String, UsageCounts)>, StoreError> {
        let rows = sqlx::query(
            "SELECT period, uploads, api_requests, bandwidth_bytes, transformations
             FROM usage WHERE account = $1 ORDER BY period",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("period")?, counts_from_row(r)?)))
            .collect()
    }

    /// Deletes usage rows of months before `period` (`YYYY-MM` sorts as text).
    pub(crate) async fn delete_usage_before(&self, period: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM usage WHERE period < $1")
            .bind(period)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (id, at, account, actor, action, target, client_ip, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&record.id)
        .bind(record.at)
        .bind(record.account.as_deref())
        .bind(&record.actor)
        .bind(&record.action)
        .bind(record.target.as_deref())
        .bind(record.client_ip.as_deref())
        .bind(record.outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Newest first. (The casts let PostgreSQL type parameters that may be NULL.)
    pub(crate) async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, account, actor, action, target, client_ip, outcome FROM audit
             WHERE (CAST($1 AS TEXT) IS NULL OR account = $1)
               AND (CAST($2 AS TEXT) IS NULL OR action = $2)
               AND (CAST($3 AS BIGINT) IS NULL OR at >= $3)
               AND (CAST($4 AS BIGINT) IS NULL OR at <= $4)
             ORDER BY at DESC, id DESC LIMIT $5",
        )
        .bind(filter.account.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    account: r.try_get("account")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    client_ip: r.try_get("client_ip")?,
                    outcome: r.try_get("outcome")?,
                })
            })
            .collect()
    }

    pub(crate) async fn delete_audit_before(&self, at: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit WHERE at < $1")
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
