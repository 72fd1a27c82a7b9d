//! Presets: named transform parameter sets of an account.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_unix};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetRecord {
    pub(crate) id: String,
    account: String,
    pub name: String,
    pub(crate) description: Option<String>,
    /// The JSON object of delivery keys, as validated by the API.
    pub(crate) params: String,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub usage_count: i64,
}

/// A change to a preset: `None` keeps the field; `Some(None)` clears the description.
#[derive(Debug, Clone, Default)]
pub(crate) struct PresetChange {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<Option<String>>,
    pub(crate) params: Option<String>,
}

const COLUMNS: &str = "id, account, name, description, params, created_at, updated_at, usage_count";

fn preset_from_row(r: &AnyRow) -> Result<PresetRecord, StoreError> {
    Ok(PresetRecord {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        params: r.try_get("params")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        usage_count: r.try_get("usage_count")?,
    })
}

/// A unique-name violation, whatever the backend calls it.
fn name_taken(e: sqlx::Error, name: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(format!("a preset named `{name}` already exists"))
        }
        _ => StoreError::Database(e),
    }
}

impl Store {
    pub async fn presets(&self, account: &str) -> Result<Vec<PresetRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM presets WHERE account = $1 ORDER BY name"
        )))
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(preset_from_row).collect()
    }

    /// By id, or by name when no id matches (`DELETE` accepts either).
    pub(crate) async fn preset(
        &self,
        account: &str,
        id_or_name: &str,
    ) -> Result<Option<PresetRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM presets WHERE account = $1 AND (id = $2 OR name = $2)
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1"
        )))
        .bind(account)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| preset_from_row(&r)).transpose()
    }

    /// Creates a preset; `Conflict` for a taken name, `Limit` when the account already has
    /// `max` (its plan's `max_presets`).
    pub(crate) async fn create_preset(
        &self,
        id: &str,
        account: &str,
        name: &str,
        description: Option<&str>,
        params: &str,
        max: u32,
    ) -> Result<PresetRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Serialises concurrent creates of one account around the limit.
        super::images::lock_account(&mut tx, account).await?;
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM presets WHERE account = $1")
            .bind(account)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if count >= i64::from(max) {
            return Err(StoreError::Limit(format!(
                "an account may have at most {max} presets"
            )));
        }
        let now = now_unix();
        sqlx::query(
            "INSERT INTO presets (id, account, name, description, params, created_at,
                                  updated_at, usage_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
        )
        .bind(id)
        .bind(account)
        .bind(name)
        .bind(description)
        .bind(params)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| name_taken(e, name))?;
        tx.commit().await?;
        Ok(PresetRecord {
            id: id.to_string(),
            account: account.to_string(),
            name: name.to_string(),
            description: description.map(str::to_string),
            params: params.to_string(),
            created_at: now,
            updated_at: now,
            usage_count: 0,
        })
    }

    /// Applies `change` to the preset with this id; `None` when there is none.
    pub(crate) async fn update_preset(
        &self,
        account: &str,
        id: &str,
        change: PresetChange,
    ) -> Result<Option<PresetRecord>, StoreError> {
        let Some(mut preset) = self.preset(account, id).await? else {
            return Ok(None);
        };
        if preset.id != id {
            return Ok(None);
        }
        let old_name = preset.name.clone();
        let old_params = preset.params.clone();
        if let Some(name) = change.name {
            preset.name = name;
        }
        if let Some(description) = change.description {
            preset.description = description;
        }
        if let Some(params) = change.params {
            preset.params = params;
        }
        preset.updated_at = now_unix();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE presets SET name = $1, description = $2, params = $3, updated_at = $4
             WHERE account = $5 AND id = $6",
        )
        .bind(&preset.name)
        .bind(preset.description.as_deref())
        .bind(&preset.params)
        .bind(preset.updated_at)
        .bind(account)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| name_taken(e, &preset.name))?;
        // URLs naming the preset render differently now (or, renamed, answer 400).
        let queued = if old_name != preset.name || old_params != preset.params {
            let tags = [crate::edge::tags::preset(account, &old_name)];
            self.enqueue_purge(&mut tx, account, &tags, "preset changed")
                .await?
        } else {
            false
        };
        tx.commit().await?;
        self.purge_committed(queued);
        Ok(Some(preset))
    }

    /// Deletes by id or name; returns the deleted preset.
    pub(crate) async fn delete_preset(
        &self,
        account: &str,
        id_or_name: &str,
    ) -> Result<Option<PresetRecord>, StoreError> {
        let Some(preset) = self.preset(account, id_or_name).await? else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM presets WHERE account = $1 AND id = $2")
            .bind(account)
            .bind(&preset.id)
            .execute(&mut *tx)
            .await?;
        let tags = [crate::edge::tags::preset(account, &preset.name)];
        let queued = self
            .enqueue_purge(&mut tx, account, &tags, "preset deleted")
            .await?;
        tx.commit().await?;
        self.purge_committed(queued);
        Ok(Some(preset))
    }

    /// Adds renders to a preset's `usage_count`.
    pub(crate) async fn add_preset_usage(&self, id: &str, renders: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE presets SET usage_count = usage_count + $1 WHERE id = $2")
            .bind(renders)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
