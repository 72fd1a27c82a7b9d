//! Keys and sealing of the disk tier: the per-original [`DataKey`], the ChaCha20-Poly1305
//! sealing and opening of one variant, and the AAD that binds a sealed entry to its variant key
//! and its header (domain, format version, media type code, `stored_at`).
//!
//! Owns: key material (zeroized on drop, compared in constant time, copied only where the
//! variant cache needs a copy) and nonces (fresh from the OS generator for every seal).
//!
//! Must never: show, log or serialize a key (its `Debug` shows no byte), return bytes that
//! failed authentication, reuse a nonce on purpose, or read or write files (what a sealed
//! value looks like on disk is `disk`'s).

use bytes::Bytes;
use chacha20poly1305::{
    ChaCha20Poly1305, Key, KeyInit, Nonce,
    aead::{Aead, OsRng, Payload, rand_core::RngCore},
};
use zeroize::Zeroize;

use super::disk::{FORMAT_VERSION, SealedVariant, media_type_from_code};
use super::{Variant, VariantKey};

pub(super) const NONCE_LEN: usize = 12;
pub(super) const TAG_LEN: usize = 16;
const AAD_DOMAIN: &[u8; 15] = b"imgnode/variant";
/// domain + version + format + stored_at + variant key.
const AAD_LEN: usize = AAD_DOMAIN.len() + 1 + 1 + 8 + 16;

/// A per-original 256-bit data key. The caller keeps it in the metadata DB and deletes it on
/// purge; that deletion is what makes the original's disk entries unreadable for good.
pub(crate) struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh random key from the OS generator.
    ///
    /// # Panics
    /// Only if the OS random source is unavailable.
    pub(crate) fn generate() -> DataKey {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        DataKey(bytes)
    }

    pub(crate) fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A second owned copy (zeroized on drop like the first); kept to the variant cache so
    /// copies of key material only appear where it needs one.
    pub(super) fn duplicate(&self) -> DataKey {
        DataKey(self.0)
    }

    /// Comparison whose time does not depend on where the keys differ.
    pub(super) fn same_as(&self, other: &DataKey) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        // The cipher keeps its own copy of the key and zeroizes it on drop (chacha20poly1305's
        // `zeroize` dependency).
        ChaCha20Poly1305::new(&Key::from(self.0))
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn aad(key: &VariantKey, format: u8, stored_at: u64) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    aad[..15].copy_from_slice(AAD_DOMAIN);
    aad[15] = FORMAT_VERSION;
    aad[16] = format;
    aad[17..25].copy_from_slice(&stored_at.to_le_bytes());
    aad[25..].copy_from_slice(&key.0);
    aad
}

impl SealedVariant {
    pub(super) fn seal(
        key: &VariantKey,
        variant: &Variant,
        format: u8,
        data_key: &DataKey,
    ) -> Option<Self> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random 96-bit nonces: each data key seals only the variants of one original, far
        // below the ~2^32 messages where random-nonce collisions start to matter.
        OsRng.try_fill_bytes(&mut nonce).ok()?;
        let aad = aad(key, format, variant.stored_at);
        let sealed = data_key
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &variant.bytes,
                    aad: &aad,
                },
            )
            .ok()?;
        Some(SealedVariant {
            format,
            stored_at: variant.stored_at,
            nonce,
            sealed: Bytes::from(sealed),
        })
    }

    pub(super) fn open(&self, key: &VariantKey, data_key: &DataKey) -> Option<Variant> {
        let media_type = media_type_from_code(self.format)?;
        let aad = aad(key, self.format, self.stored_at);
        let plain = data_key
            .cipher()
            .decrypt(
                &Nonce::from(self.nonce),
                Payload {
                    msg: &self.sealed,
                    aad: &aad,
                },
            )
            .ok()?;
        Some(Variant {
            bytes: Bytes::from(plain),
            media_type,
            stored_at: self.stored_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{T0, key, payload, variant};
    use super::*;

    #[tokio::test]
    async fn an_entry_moved_under_another_key_fails_authentication() {
        let dk = DataKey::generate();
        let v = variant(payload(1, 300), T0);
        let sealed = SealedVariant::seal(&key(1), &v, 3, &dk).expect("seal");
        assert!(sealed.open(&key(1), &dk).is_some());
        assert!(sealed.open(&key(2), &dk).is_none(), "key is in the AAD");
        let mut edited = sealed.clone();
        edited.stored_at += 1;
        assert!(
            edited.open(&key(1), &dk).is_none(),
            "stored_at is in the AAD"
        );
        let mut edited = sealed.clone();
        edited.format = 1;
        assert!(edited.open(&key(1), &dk).is_none(), "format is in the AAD");
        // Round trip through the disk encoding.
        let mut buf = Vec::new();
        sealed.encode(&mut buf).expect("encode");
        let decoded = SealedVariant::decode(&mut buf.as_slice()).expect("decode");
        assert_eq!(
            decoded.open(&key(1), &dk).map(|v| v.bytes),
            Some(v.bytes.clone())
        );
        // A damaged length field neither panics nor over-allocates.
        buf[22..26].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SealedVariant::decode(&mut buf.as_slice()).is_err());
        buf.truncate(40);
        assert!(SealedVariant::decode(&mut buf.as_slice()).is_err());
    }

    #[test]
    fn data_key_debug_hides_the_key() {
        let dk = DataKey::from_bytes([0xAB; 32]);
        let shown = format!("{dk:?}");
        assert_eq!(shown, "DataKey(..)");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab"));
    }
}
