//! The render use case: one variant made from its original and put in the variant cache.
//!
//! Owns the order of a render (a place in the CPU pool first, then the original, then the
//! pipeline, then the cache) and what a render may fail with, [`RenderError`], which
//! `error.rs` maps to HTTP. Concurrent requests for one variant share one render through the
//! state's [`RenderFlights`]. Must never decide HTTP answers, formats or budgets: the
//! delivery handler has decided what to render and whether it may before it comes here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache::flight::{SingleFlight, TaskFailed};
use crate::cache::variants::{Variant, VariantKey};
use crate::cpu::{CpuError, JobClass};
use crate::origin::{OriginError, OriginGetError};
use crate::pipeline::{self, OutputFormat, PipelineError, StageTimings, Transform};
use crate::state::AppState;
use crate::store::StoreError;

/// A render's result as every waiter of a single flight receives it.
#[derive(Clone)]
pub(crate) struct RenderOutcome {
    pub(crate) variant: Variant,
    /// Origin fetch and stage durations (the leader's), for `Server-Timing`.
    pub(crate) timing: (Duration, StageTimings),
}

/// Why a render failed; cloned to every waiter of its flight.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RenderError {
    /// The CPU pool refused it (full queue), timed it out, or the work panicked.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    #[error(transparent)]
    Origin(#[from] OriginGetError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Looking up or creating the original's data key.
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

impl From<StoreError> for RenderError {
    fn from(e: StoreError) -> RenderError {
        RenderError::Store(Arc::new(e))
    }
}

/// Renders in flight, by variant.
pub(crate) type RenderFlights = SingleFlight<VariantKey, RenderOutcome, RenderError>;

/// What to render: the original (by account and hash), whose variants it is (`scope`, see
/// [`crate::cache::scope`]), the transform and format, and the cache key of the result.
pub(crate) struct RenderJob {
    pub(crate) account: String,
    pub(crate) hash: String,
    pub(crate) scope: String,
    pub(crate) transform: Transform,
    pub(crate) output: OutputFormat,
    pub(crate) key: VariantKey,
    /// Nobody waits for it (a background AVIF): it runs only on an idle pool.
    pub(crate) background: bool,
}

/// `account`'s original `hash`, through the originals cache (one load however many ask at
/// once), counted by outcome.
pub(crate) async fn fetch_original(
    state: &AppState,
    account: &str,
    hash: &str,
) -> Result<Bytes, OriginGetError> {
    let max = state.config.limits.max_source_bytes;
    let load = async {
        let got = state.originals.read(account, hash, max).await;
        let outcome = match &got {
            Ok(_) => "ok",
            Err(OriginGetError::Origin(OriginError::NotFound(_))) => "not_found",
            Err(OriginGetError::Origin(OriginError::Timeout)) => "timeout",
            Err(OriginGetError::Origin(OriginError::Unavailable(_))) => "unavailable",
            Err(OriginGetError::TooLarge(_)) => "too_large",
            Err(OriginGetError::Sealed(_)) => "refused",
        };
        state
            .metrics
            .origin_fetches_total
            .with_label_values(&[outcome])
            .inc();
        got
    };
    state
        .caches
        .original(&crate::cache::scope(account, hash), load)
        .await
}

/// One render for a single flight: fetch, render on the CPU pool, store in the cache. Runs in
/// its own task, so it finishes (and fills the cache) even if its first requester left.
pub(crate) async fn render_and_store(
    state: Arc<AppState>,
    job: RenderJob,
) -> Result<RenderOutcome, RenderError> {
    let RenderJob {
        account,
        hash,
        scope,
        transform,
        output,
        key,
        background,
    } = job;
    let class = match output {
        _ if background => JobClass::Background,
        OutputFormat::Avif => JobClass::Avif,
        _ => JobClass::Normal,
    };
    // The place in the CPU pool first: a render the pool refuses fetches nothing, and at most
    // threads + queue originals are held for renders at once, however many requests come.
    let admission = state.cpu.admit(class)?;
    let started = Instant::now();
    let source = fetch_original(&state, &account, &hash).await?;
    let fetch = started.elapsed();

    let limits = state.config.limits.clone();
    let settings = state.config.encode.clone();
    let timeout = state.config.cpu.transform_timeout;
    // The pool stops waiting at `timeout`; an animation also stops working then (between
    // two frames), so a thousand-frame source cannot hold a thread long after its answer.
    let deadline = Instant::now() + timeout;
    let rendered = admission
        .run(timeout, move || {
            pipeline::render_until(
                &source,
                &transform,
                output,
                &limits,
                &settings,
                Some(deadline),
            )
        })
        .await?;
    let rendered = match rendered {
        Ok(r) => {
            state.metrics.render.observe_ok(output, fetch, &r.timings);
            r
        }
        Err(e) => {
            state.metrics.render.observe_err(output, &e);
            return Err(e.into());
        }
    };
    let variant = Variant {
        bytes: Bytes::from(rendered.bytes),
        media_type: output.media_type(),
        stored_at: crate::store::now_unix() as u64,
    };
    state
        .caches
        .insert_rendered(&state.store, &scope, key, variant.clone())
        .await?;
    Ok(RenderOutcome {
        variant,
        timing: (fetch, rendered.timings),
    })
}
