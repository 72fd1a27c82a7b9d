//! The memory tier's sizing: what an entry weighs against `memory_bytes`, the share of the
//! tier one entry may take, and the listener that counts what foyer evicts from it.
//!
//! Memory entries are plaintext (hits are served without crypto); they leave memory by
//! eviction, and stay on disk when they were written there.
//!
//! Must never: touch the disk or key material, or weigh an entry at less than its bytes (the
//! `memory_bytes` bound rests on it).

use prometheus::IntCounter;

use super::VariantKey;
use super::disk::StoredVariant;

/// Memory weight of an entry beyond its bytes (record, key, Arc, headers).
pub(super) const ENTRY_MEMORY_OVERHEAD: usize = 128;
/// One entry may use at most this fraction of the memory tier, so a single large variant
/// cannot flush the hot set.
pub(super) const MEMORY_ENTRY_DIVISOR: u64 = 8;

impl StoredVariant {
    pub(super) fn weight(&self) -> usize {
        ENTRY_MEMORY_OVERHEAD
            + match self {
                StoredVariant::Plain { variant, .. } => variant.bytes.len(),
                StoredVariant::Sealed(sealed) => sealed.sealed.len(),
            }
    }
}

/// Counts memory-tier evictions (foyer calls this as entries leave memory).
pub(super) struct EvictionCounter(pub(super) IntCounter);

impl foyer::EventListener for EvictionCounter {
    type Key = VariantKey;
    type Value = StoredVariant;

    fn on_leave(&self, reason: foyer::Event, _key: &VariantKey, _value: &StoredVariant) {
        if reason == foyer::Event::Evict {
            self.0.inc();
        }
    }
}
