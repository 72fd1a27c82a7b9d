//! Several nodes on one PostgreSQL database: cache invalidation between them.
//!
//! Every node keeps its own metadata caches (accounts, paths, presets, settings, API keys,
//! cache data keys). A write through one node invalidates its own caches at once and
//! publishes a [`Notice`]; the others apply it on receipt. Notices travel by PostgreSQL
//! LISTEN/NOTIFY on the database the nodes already share (no broker to run): a notice is sent
//! after the write commits, and PostgreSQL delivers it to every listening session, in
//! commit order, normally within milliseconds. A node whose listening connection drops
//! clears its metadata caches when it listens again (it may have missed notices), and the
//! caches' TTLs (`cache.metadata_ttl`, `cache.negative_ttl`, 30 s for API keys) bound
//! staleness even while it cannot listen at all.
//!
//! On SQLite there is one serving node; a command run beside it (`imgnode account ...`)
//! writes its notices to a table the node reads every second ([`NoticeLog`]).
//! Must never decide what a notice invalidates: it carries notices; the state applies them
//! (`AppState::apply_notice`), through the caches' local methods.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// The NOTIFY channel.
const CHANNEL: &str = "imgnode_invalidate";

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more: hash lists are split.
const HASHES_PER_NOTICE: usize = 100;

/// What another node must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// Everything cached about an account: the account row, its settings, its paths, its
    /// presets.
    Account(String),
    /// Cache data keys, variants and cached original bytes of these content hashes.
    Hashes(Vec<String>),
    /// One API key, by the SHA-256 of its secret (revoked).
    ApiKey(String),
    /// Every metadata cache (a purge of everything).
    All,
}

impl Notice {
    /// `<node> <kind> <args>`; account names and hashes never contain spaces.
    fn encode(&self, node: &str) -> String {
        match self {
            Notice::Account(name) => format!("{node} a {name}"),
            Notice::Hashes(hashes) => format!("{node} h {}", hashes.join(" ")),
            Notice::ApiKey(hash) => format!("{node} k {hash}"),
            Notice::All => format!("{node} *"),
        }
    }

    /// The notice and the node that sent it; `None` for a payload this version does not know
    /// (a newer node's): the caller then clears everything, which is always safe.
    fn decode(payload: &str) -> Option<(&str, Notice)> {
        let mut parts = payload.split(' ');
        let node = parts.next()?;
        let notice = match parts.next()? {
            "a" => Notice::Account(parts.next()?.to_string()),
            "h" => Notice::Hashes(parts.map(str::to_string).collect()),
            "k" => Notice::ApiKey(parts.next()?.to_string()),
            "*" => Notice::All,
            _ => return None,
        };
        Some((node, notice))
    }
}

enum Message {
    Notice(Notice),
    /// Acknowledged once every notice queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

/// Queues notices for the other nodes; cheap to clone. Publishing never waits: a sender task
/// writes them to the database in order.
#[derive(Clone, Default)]
pub(crate) struct Broadcaster {
    tx: Option<mpsc::UnboundedSender<Message>>,
}

impl Broadcaster {
    /// A broadcaster that sends nothing (SQLite: one node).
    pub(crate) fn disabled() -> Broadcaster {
        Broadcaster::default()
    }

    /// A broadcaster and the sender task to spawn (PostgreSQL), which runs until every clone
    /// of the broadcaster is gone.
    pub(crate) fn for_store(
        store: &Store,
        node: String,
        counts: prometheus::IntCounterVec,
    ) -> (Broadcaster, impl Future<Output = ()> + Send + 'static) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let store = store.clone();
        let task = async move {
            while let Some(message) = rx.recv().await {
                match message {
                    Message::Notice(notice) => {
                        let outcome = if send(&store, &node, &notice).await {
                            "sent"
                        } else {
                            "failed"
                        };
                        counts.with_label_values(&[outcome]).inc();
                    }
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        };
        (Broadcaster { tx: Some(tx) }, task)
    }

    pub(crate) fn publish(&self, notice: Notice) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Notice(notice));
        }
    }

    /// Waits until what was published so far has been sent (offline commands, shutdown).
    pub(crate) async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Message::Flush(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }
}

/// Whether every payload of `notice` was sent.
async fn send(store: &Store, node: &str, notice: &Notice) -> bool {
    let payloads: Vec<String> = match notice {
        Notice::Hashes(hashes) => hashes
            .chunks(HASHES_PER_NOTICE)
            .map(|chunk| Notice::Hashes(chunk.to_vec()).encode(node))
            .collect(),
        other => vec![other.encode(node)],
    };
    let mut all_sent = true;
    for payload in payloads {
        // A few tries: a notice lost here leaves other nodes stale until their TTLs expire.
        for attempt in 0..3u32 {
            match store.notify(CHANNEL, &payload).await {
                Ok(()) => break,
                Err(e) if attempt == 2 => {
                    tracing::error!(error = %e, "cache invalidation not sent to other nodes");
                    all_sent = false;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100 << attempt)).await,
            }
        }
    }
    all_sent
}

/// Hands other nodes' notices to `apply` until shutdown: `Some(notice)`, or `None` when this
/// node must forget every cached metadata answer (after every (re)connection, since notices
/// sent while it was not listening are lost, and for a notice it cannot read). Skips this
/// node's own notices (`node_id`). Reconnects on its own.
pub(crate) async fn listen<F, Fut>(
    url: String,
    node_id: String,
    metrics: Metrics,
    apply: F,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn(Option<Notice>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let got = tokio::select! {
            got = connected => got,
            () = stopped(&mut shutdown) => return,
        };
        let mut listener = match got {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other nodes' invalidations; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = stopped(&mut shutdown) => return,
                }
            }
        };
        apply(None).await;
        metrics
            .cluster_notices_total
            .with_label_values(&["resync"])
            .inc();
        metrics.cluster_listening.set(1);
        loop {
            tokio::select! {
                got = listener.try_recv() => match got {
                    Ok(Some(n)) => match Notice::decode(n.payload()) {
                        Some((node, _)) if node == node_id => {}
                        decoded => {
                            metrics.cluster_notices_total.with_label_values(&["received"]).inc();
                            apply(decoded.map(|(_, notice)| notice)).await;
                        }
                    },
                    Ok(None) => {
                        tracing::warn!("lost the connection that listens for other nodes' invalidations");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other nodes' invalidations failed");
                        break;
                    }
                },
                () = stopped(&mut shutdown) => {
                    metrics.cluster_listening.set(0);
                    return;
                }
            }
        }
        metrics.cluster_listening.set(0);
    }
}

/// How often a node on SQLite reads the notices other processes wrote ([`NoticeLog`]).
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Most notices read in one round; the rest follow in the next.
const POLL_BATCH: i64 = 1000;

/// The SQLite side of [`listen`]: there, the only other writer is a command run beside the
/// serving node (`imgnode account ...`), whose notices arrive as rows of the store's
/// `notices` table ([`Store::notify`]); the node reads them every [`POLL_INTERVAL`].
pub(crate) struct NoticeLog {
    node: String,
    /// The newest notice id read; `None` before the first round.
    last: Option<i64>,
}

impl NoticeLog {
    pub(crate) fn new(node_id: String) -> NoticeLog {
        NoticeLog {
            node: node_id,
            last: None,
        }
    }

    /// The notices written since the last round, for the state to apply (`None`: one this
    /// version cannot read, so forget everything). The first round only finds where the log
    /// ends: the node takes it before it serves, while its caches hold nothing a notice could
    /// make stale.
    pub(crate) async fn read(&mut self, store: &Store) -> Result<Vec<Option<Notice>>, StoreError> {
        let (last, payloads) = store.notices_after(self.last, POLL_BATCH).await?;
        self.last = Some(last);
        Ok(payloads
            .iter()
            .filter_map(|p| match Notice::decode(p) {
                Some((node, _)) if node == self.node => None,
                decoded => Some(decoded.map(|(_, notice)| notice)),
            })
            .collect())
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A random id for this process, so it can skip its own notices.
pub fn node_id() -> String {
    use chacha20poly1305::aead::{OsRng, rand_core::RngCore};
    let mut id = [0u8; 8];
    if OsRng.try_fill_bytes(&mut id).is_err() {
        // Unique enough among the nodes of one database.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        id = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        for notice in [
            Notice::Account("demo".into()),
            Notice::Hashes(vec!["ab".repeat(32), "cd".repeat(32)]),
            Notice::ApiKey("ef".repeat(32)),
            Notice::All,
        ] {
            let text = notice.encode("n1");
            assert_eq!(Notice::decode(&text), Some(("n1", notice)));
        }
        assert_eq!(Notice::decode("n1 z what"), None);
        assert_eq!(Notice::decode("n1"), None);
    }

    #[test]
    fn the_largest_hash_notice_fits_a_notify_payload() {
        let hashes = vec!["ab".repeat(32); HASHES_PER_NOTICE];
        assert!(Notice::Hashes(hashes).encode(&node_id()).len() < 8000);
    }
}
