//! What the disk tier holds and how it is laid out: the coding of the keys and values foyer
//! writes, the media type codes, and the block engine's sizing on a device ([`DiskLayout`]).
//!
//! On-disk value (version 1), all integers little-endian:
//! `version u8 | format u8 | stored_at u64 | nonce [u8; 12] | sealed_len u32 | sealed`,
//! where `sealed` is ChaCha20-Poly1305 ciphertext + 16-byte tag, and the AAD binds the
//! domain, version, format, stored_at and the variant key, so an entry copied under another
//! key, or with an edited header, fails authentication (sealing and the AAD are `crypto`'s).
//!
//! Must never: write plaintext variant bytes (a value is sealed on its way out; a memory-only
//! one is refused), allocate more than a damaged entry holds, panic on any bytes read back,
//! or change an existing media type code (codes are only ever appended).

use std::{
    io::{Read, Write},
    sync::Arc,
};

use bytes::Bytes;
use foyer::Code;

use super::crypto::{DataKey, NONCE_LEN, TAG_LEN};
use super::{CacheError, Variant, VariantCacheConfig, VariantKey};

// ---------------------------------------------------------------------------------------------
// Keys and values

impl Code for VariantKey {
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        writer.write_all(&self.0).map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        let mut bytes = [0u8; 16];
        reader
            .read_exact(&mut bytes)
            .map_err(foyer::Error::io_error)?;
        Ok(VariantKey(bytes))
    }

    fn estimated_size(&self) -> usize {
        16
    }
}

/// Media types with a stable on-disk code: the code is the index + 1, so entries must only
/// ever be appended to this list.
pub(crate) const MEDIA_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/avif",
    "image/gif",
    "image/bmp",
    "image/jxl",
    "image/tiff",
];

pub(super) fn media_type_code(media_type: &str) -> Option<u8> {
    let index = MEDIA_TYPES.iter().position(|t| *t == media_type)?;
    u8::try_from(index + 1).ok()
}

pub(super) fn media_type_from_code(code: u8) -> Option<&'static str> {
    MEDIA_TYPES.get(usize::from(code).checked_sub(1)?).copied()
}

pub(super) const FORMAT_VERSION: u8 = 1;
/// version + format + stored_at + nonce + sealed_len.
const VALUE_HEADER_LEN: usize = 1 + 1 + 8 + NONCE_LEN + 4;
/// Decode refuses larger sealed lengths before allocating; far above any block size we pick.
const MAX_SEALED_LEN: usize = 1 << 30;

/// What foyer stores. In memory it is always `Plain` (hits are served without crypto); `Sealed`
/// only exists between a disk read and the decryption in
/// [`VariantCache::get`](super::VariantCache::get).
#[derive(Clone)]
pub(super) enum StoredVariant {
    Plain {
        /// Repeated here because `Code::encode` sees only the value, and the AAD needs it.
        key: VariantKey,
        variant: Variant,
        /// The key `encode` seals with. Held in memory only, never serialized.
        data_key: Arc<DataKey>,
        /// Format code, resolved once at insertion; `None` means "memory only".
        format: Option<u8>,
    },
    Sealed(SealedVariant),
}

#[derive(Clone)]
pub(super) struct SealedVariant {
    pub(super) format: u8,
    pub(super) stored_at: u64,
    pub(super) nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the tag.
    pub(super) sealed: Bytes,
}

fn coding_error(message: &'static str) -> foyer::Error {
    foyer::Error::new(foyer::ErrorKind::Parse, message)
}

impl Code for StoredVariant {
    /// Seals plaintext on its way to disk: this runs on foyer's flusher task, so the insert
    /// path never pays for encryption, and nothing but the sealed form reaches the file.
    fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        match self {
            StoredVariant::Plain {
                key,
                variant,
                data_key,
                format: Some(format),
            } => SealedVariant::seal(key, variant, *format, data_key)
                .ok_or_else(|| {
                    foyer::Error::new(foyer::ErrorKind::External, "sealing a variant failed")
                })?
                .encode(writer),
            // Memory-only entries are inserted with `Location::InMem` and never reach here;
            // refusing keeps the rule "no plaintext on disk" independent of that.
            StoredVariant::Plain { format: None, .. } => Err(foyer::Error::new(
                foyer::ErrorKind::Unsupported,
                "memory-only variant has no disk encoding",
            )),
            StoredVariant::Sealed(sealed) => sealed.encode(writer),
        }
    }

    fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        SealedVariant::decode(reader).map(StoredVariant::Sealed)
    }

    fn estimated_size(&self) -> usize {
        match self {
            StoredVariant::Plain { variant, .. } => {
                VALUE_HEADER_LEN + variant.bytes.len() + TAG_LEN
            }
            StoredVariant::Sealed(sealed) => VALUE_HEADER_LEN + sealed.sealed.len(),
        }
    }
}

impl SealedVariant {
    pub(super) fn encode(&self, writer: &mut impl Write) -> foyer::Result<()> {
        let len = u32::try_from(self.sealed.len())
            .map_err(|_| coding_error("sealed variant longer than u32"))?;
        let mut header = [0u8; VALUE_HEADER_LEN];
        header[0] = FORMAT_VERSION;
        header[1] = self.format;
        header[2..10].copy_from_slice(&self.stored_at.to_le_bytes());
        header[10..22].copy_from_slice(&self.nonce);
        header[22..26].copy_from_slice(&len.to_le_bytes());
        writer.write_all(&header).map_err(foyer::Error::io_error)?;
        writer
            .write_all(&self.sealed)
            .map_err(foyer::Error::io_error)
    }

    pub(super) fn decode(reader: &mut impl Read) -> foyer::Result<Self> {
        let mut header = [0u8; VALUE_HEADER_LEN];
        reader
            .read_exact(&mut header)
            .map_err(foyer::Error::io_error)?;
        if header[0] != FORMAT_VERSION {
            return Err(coding_error("unknown variant format version"));
        }
        let format = header[1];
        let mut stored_at = [0u8; 8];
        stored_at.copy_from_slice(&header[2..10]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[10..22]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[22..26]);
        let len = usize::try_from(u32::from_le_bytes(len))
            .map_err(|_| coding_error("sealed length does not fit usize"))?;
        if !(TAG_LEN..=MAX_SEALED_LEN).contains(&len) {
            return Err(coding_error("sealed length out of range"));
        }
        // `take` + `read_to_end` grows with the bytes actually present, so a damaged length
        // cannot make us allocate more than the entry holds.
        let mut sealed = Vec::new();
        reader
            .take(len as u64)
            .read_to_end(&mut sealed)
            .map_err(foyer::Error::io_error)?;
        if sealed.len() != len {
            return Err(coding_error("sealed variant truncated"));
        }
        Ok(SealedVariant {
            format,
            stored_at: u64::from_le_bytes(stored_at),
            nonce,
            sealed: Bytes::from(sealed),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Layout

/// foyer's I/O alignment.
pub(super) const PAGE: u64 = 4096;
/// foyer's default blob index size, reserved at the start of each blob in a block.
const BLOB_INDEX_BYTES: u64 = 4096;
/// Worst-case per-entry overhead on disk: foyer's entry header (36 B) + key (16 B) + our value
/// header (26 B) + tag (16 B), rounded up to the page foyer aligns every entry to.
const DISK_ENTRY_OVERHEAD: u64 = PAGE;
/// foyer's default block size; we go smaller only for small devices, larger only for large
/// entries.
const PREFERRED_BLOCK_BYTES: u64 = 16 << 20;
/// Eviction is per block, so a device needs several of them to evict only part of itself;
/// foyer also warns below `2 * (flushers + clean_block_threshold)` = 4.
pub(super) const MIN_BLOCKS: u64 = 8;
/// foyer's default flush buffer and submit-queue threshold; raised to the block size when
/// entries are larger, since an entry that does not fit the flush buffer is dropped.
const DEFAULT_FLUSH_BUFFER_BYTES: u64 = 16 << 20;
/// Largest `max_entry_bytes` accepted (the on-disk length field is a u32 and foyer's indexer
/// addresses entries with 32-bit lengths).
const MAX_ENTRY_LIMIT: u64 = 1 << 30;

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DiskLayout {
    pub(super) capacity: u64,
    pub(super) block: u64,
    pub(super) flush_buffer: u64,
}

impl DiskLayout {
    pub(super) fn plan(config: &VariantCacheConfig) -> Result<Self, CacheError> {
        if config.memory_bytes == 0 {
            return Err(CacheError::Config("memory_bytes must be > 0".into()));
        }
        if config.ttl.as_secs() == 0 {
            return Err(CacheError::Config("ttl must be at least 1s".into()));
        }
        if config.max_entry_bytes == 0 || config.max_entry_bytes > MAX_ENTRY_LIMIT {
            return Err(CacheError::Config(format!(
                "max_entry_bytes must be in 1..={MAX_ENTRY_LIMIT}"
            )));
        }
        let capacity = config.disk_bytes / PAGE * PAGE;
        // The tombstone log takes one 16-byte slot per page of capacity, in its own partition.
        let tombstone_bytes = align_up((capacity / PAGE).div_ceil(PAGE / 16) * PAGE, PAGE);
        let usable = capacity.saturating_sub(tombstone_bytes);
        let needed =
            align_up(config.max_entry_bytes + DISK_ENTRY_OVERHEAD, PAGE) + BLOB_INDEX_BYTES;
        let preferred = (usable / MIN_BLOCKS / PAGE * PAGE).min(PREFERRED_BLOCK_BYTES);
        let block = needed.max(preferred);
        if usable / block < MIN_BLOCKS {
            return Err(CacheError::Config(format!(
                "disk_bytes ({}) must hold {MIN_BLOCKS} blocks of {block} bytes plus the \
                 tombstone log; raise disk_bytes or lower max_entry_bytes",
                config.disk_bytes
            )));
        }
        Ok(DiskLayout {
            capacity,
            block,
            flush_buffer: block.max(DEFAULT_FLUSH_BUFFER_BYTES),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use super::*;

    #[test]
    fn layout_fits_entries_and_rejects_tiny_devices() {
        let mut config = VariantCacheConfig {
            memory_bytes: 1 << 20,
            disk_bytes: 10 << 30,
            dir: PathBuf::new(),
            ttl: Duration::from_secs(60),
            max_entry_bytes: 8 << 20,
        };
        let layout = DiskLayout::plan(&config).expect("plan");
        assert_eq!(layout.block, PREFERRED_BLOCK_BYTES);
        config.max_entry_bytes = 40 << 20;
        let layout = DiskLayout::plan(&config).expect("plan");
        assert!(layout.block >= (40 << 20) + DISK_ENTRY_OVERHEAD + BLOB_INDEX_BYTES);
        assert!(layout.flush_buffer >= layout.block);
        config.disk_bytes = 100 << 20;
        assert!(matches!(
            DiskLayout::plan(&config),
            Err(CacheError::Config(_))
        ));
        config.max_entry_bytes = 0;
        assert!(matches!(
            DiskLayout::plan(&config),
            Err(CacheError::Config(_))
        ));
    }
}
