//! Erasure of a whole account, in an order that survives a crash.
//!
//! Erasure first marks the account `erasing` (from then on nothing of it is served and its
//! keys are refused), purges its cached variants (data keys first), deletes its metadata and
//! its originals' data keys in one transaction (from its commit no copy of its originals,
//! in the bucket, a bucket version or a backup, can be decrypted), deletes the objects, and
//! only then deletes the account row; an erasure interrupted by a crash is resumed at start-up because
//! the row is still there, marked.

use super::AccountError;
use crate::state::AppState;
use crate::store::AccountStatus;

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    pub images: usize,
    /// Originals deleted from object storage (the account's sealed objects, and plaintext
    /// objects of an earlier version no other account reads).
    pub originals_deleted: usize,
    /// Where the purge of the account's copies at the CDN stands.
    pub edge: EdgePurgeState,
}

/// The erasure's purge at the edge (`[[edge.purge]]` targets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EdgePurgeState {
    /// No purge target is configured.
    #[default]
    NotConfigured,
    /// Every target acknowledged it.
    Delivered,
    /// Still being retried after `edge.erasure_wait`: the erasure is not complete until it is
    /// delivered (`GET /admin/v1/edge/purges?account=...`).
    Pending,
    /// A target refused it through every attempt: logged, and listed by the operator API.
    Failed,
}

impl EdgePurgeState {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgePurgeState::NotConfigured => "not_configured",
            EdgePurgeState::Delivered => "delivered",
            EdgePurgeState::Pending => "pending",
            EdgePurgeState::Failed => "failed",
        }
    }

    /// Whether the erasure is complete everywhere the node can reach.
    pub fn complete(self) -> bool {
        self != EdgePurgeState::Pending
    }
}

/// Erases `name` completely (see the module doc for the order). Idempotent: running it again
/// on a half-erased account finishes the job.
pub async fn erase(state: &AppState, name: &str) -> Result<Erased, AccountError> {
    let started_ms = crate::store::now_ms();
    if !state
        .store
        .set_account_status(name, AccountStatus::Erasing)
        .await?
    {
        return Err(AccountError::NoSuchAccount);
    }
    state.caches.meta.invalidate_account(name).await;
    state.caches.purge_account(&state.store, name).await?;
    // Saves the hashes to release in the same transaction: a resume after this point still
    // finds them.
    state.store.delete_account_data(name).await?;
    state.caches.meta.invalidate_account(name).await;
    state.api_keys.forget_account(name);
    state.usage.forget(name);
    // The account's data keys went with its data: what follows deletes ciphertext no key
    // opens any more (and plaintext left by an earlier version).
    let hashes = state.store.erasure_originals(name).await?;
    let mut originals_deleted = 0;
    for (hash, object) in &hashes {
        // A failure here leaves an unreferenced object, which the orphan sweep deletes.
        match state.ingest().release_erased(hash, object.as_deref()).await {
            Ok(true) => originals_deleted += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "erasure: deleting an original failed"),
        }
    }
    state.store.delete_account(name).await?;
    state.caches.meta.invalidate_account(name).await;
    tracing::info!(
        account = name,
        images = hashes.len(),
        originals_deleted,
        "account erased"
    );
    let edge = edge_purge_outcome(state, name, started_ms).await?;
    if edge == EdgePurgeState::Pending {
        tracing::warn!(
            account = name,
            "account erased here; its purge at the CDN is still being retried"
        );
    }
    Ok(Erased {
        images: hashes.len(),
        originals_deleted,
        edge,
    })
}

/// Waits up to `edge.erasure_wait` for the account's edge purges (the one setting the
/// account `erasing` wrote) to be delivered or given up.
async fn edge_purge_outcome(
    state: &AppState,
    name: &str,
    started_ms: i64,
) -> Result<EdgePurgeState, AccountError> {
    if state.config.edge.purge.is_empty() {
        return Ok(EdgePurgeState::NotConfigured);
    }
    let deadline = tokio::time::Instant::now() + state.config.edge.erasure_wait;
    let mut every = tokio::time::interval(std::time::Duration::from_millis(100));
    while state.store.purges_pending_for(name).await? {
        if tokio::time::Instant::now() >= deadline {
            return Ok(EdgePurgeState::Pending);
        }
        every.tick().await;
    }
    let failed = state
        .store
        .purges(Some(name), 1000)
        .await?
        .iter()
        .any(|p| p.failed && p.created_at_ms >= started_ms);
    Ok(if failed {
        EdgePurgeState::Failed
    } else {
        EdgePurgeState::Delivered
    })
}

/// Finishes every erasure a crash (or a cancelled request) interrupted; run at start-up
/// before serving, and with every retention pass.
pub(crate) async fn resume_erasures(state: &AppState) -> Result<usize, AccountError> {
    let pending = state.store.accounts_in(AccountStatus::Erasing).await?;
    for name in &pending {
        tracing::warn!(account = %name, "resuming an interrupted account erasure");
        erase(state, name).await?;
    }
    Ok(pending.len())
}
