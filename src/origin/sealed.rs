//! The sealed form of an original in object storage: AES-256-GCM over fixed-size segments
//! (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, as in `age` and Tink),
//! so an object is written and read a segment at a time, never held whole twice, and any
//! truncation, reordering, splice or flipped bit fails authentication.
//!
//! Layout: a 16-byte header (`MAGIC`, the base-2 logarithm of the segment size, a random
//! 7-byte nonce prefix), then the segments, each `min(segment, left)` bytes of plaintext
//! followed by its 16-byte tag; an empty original is one empty segment. Segment `i` is
//! sealed with the nonce `prefix ‖ i (u32, big-endian) ‖ last (0 or 1)` and the associated
//! data `header ‖ object name`, so a segment cannot move within an object, between objects,
//! or lose the segments after it, and an object cannot be renamed to another's place.
//!
//! Owns: the format and its arithmetic. Must never: return plaintext that failed
//! authentication (segments are opened in place and the buffer is dropped on failure), or
//! allocate before the declared size is checked against the caller's limit.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

/// First bytes of every sealed object (format version 1).
pub(crate) const MAGIC: &[u8; 8] = b"IMGNOBJ1";
pub(crate) const HEADER_LEN: usize = 16;
const PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;
/// 64 KiB segments: the tag overhead is 0.02%, and a reader holds at most one segment more
/// than the plaintext it returns.
const SEGMENT_LOG2: u8 = 16;
/// Segment sizes a reader accepts (4 KiB to 16 MiB): a later writer may choose another.
const SEGMENT_LOG2_RANGE: std::ops::RangeInclusive<u8> = 12..=24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    #[error("not a sealed object (bad header)")]
    Header,
    #[error("sealed object has an impossible length")]
    Length,
    #[error("sealed object failed authentication (tampered, truncated or not this key's)")]
    Authentication,
    #[error("original is {0} bytes, over the limit")]
    TooLarge(u64),
}

/// The 256-bit data key of one original object.
pub(crate) struct ObjectKey {
    raw: Zeroizing<[u8; 32]>,
}

impl ObjectKey {
    /// A fresh random key.
    ///
    /// # Panics
    /// Only if the OS random source fails.
    pub(crate) fn generate() -> ObjectKey {
        let mut raw = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(raw.as_mut()).expect("the OS random source failed");
        ObjectKey { raw }
    }

    pub(crate) fn from_bytes(raw: Zeroizing<[u8; 32]>) -> ObjectKey {
        ObjectKey { raw }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.raw
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always a valid AES-256 key.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.raw.as_ref()).expect("32-byte key"))
    }
}

impl std::fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectKey(..)")
    }
}

fn nonce(prefix: &[u8], counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Bytes of the sealed form of `plain_len` bytes.
#[cfg(test)]
pub(crate) fn sealed_len(plain_len: u64) -> u64 {
    let segment = 1u64 << SEGMENT_LOG2;
    let segments = plain_len.div_ceil(segment).max(1);
    HEADER_LEN as u64 + plain_len + segments * TAG_LEN as u64
}

/// Seals an original segment by segment: `header()` first, then `seal_next` for each
/// segment of `segment_len()` bytes (the last may be shorter, or empty for an empty original).
pub(crate) struct Sealer {
    key: LessSafeKey,
    header: [u8; HEADER_LEN],
    aad: Vec<u8>,
    counter: u32,
}

impl Sealer {
    /// `object` is the object's name: sealing binds the segments to it.
    pub(crate) fn new(key: &ObjectKey, object: &str) -> Sealer {
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = SEGMENT_LOG2;
        aws_lc_rs::rand::fill(&mut header[9..]).expect("the OS random source failed");
        Sealer {
            key: key.aead(),
            aad: aad(&header, object),
            header,
            counter: 0,
        }
    }

    pub(crate) fn header(&self) -> &[u8] {
        &self.header
    }

    pub(crate) fn segment_len() -> usize {
        1 << SEGMENT_LOG2
    }

    /// The sealed form of the next segment (plaintext then tag).
    pub(crate) fn seal_next(&mut self, plain: &[u8], last: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(&self.header[9..], self.counter, last),
                Aad::from(&self.aad[..]),
                &mut out,
            )
            .expect("AES-GCM sealing of a segment under 4 GiB cannot fail");
        out.extend_from_slice(tag.as_ref());
        self.counter += 1;
        out
    }

    /// The whole sealed object at once.
    #[cfg(test)]
    pub(crate) fn seal_all(key: &ObjectKey, object: &str, plain: &[u8]) -> Vec<u8> {
        let mut sealer = Sealer::new(key, object);
        let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
        out.extend_from_slice(sealer.header());
        let segments: Vec<&[u8]> = if plain.is_empty() {
            vec![&[]]
        } else {
            plain.chunks(Sealer::segment_len()).collect()
        };
        let n = segments.len();
        for (i, segment) in segments.into_iter().enumerate() {
            out.extend_from_slice(&sealer.seal_next(segment, i + 1 == n));
        }
        out
    }
}

/// Opens a sealed object as its bytes arrive (`push` in any pieces, then `finish`).
pub(crate) struct Opener {
    key: LessSafeKey,
    object: String,
    /// The sealed length, from the object's metadata.
    total: u64,
    max_plain: u64,
    header: Vec<u8>,
    aad: Vec<u8>,
    layout: Option<Layout>,
    /// The plaintext so far, then the current segment's sealed bytes from `segment_start`.
    out: Vec<u8>,
    segment_start: usize,
    counter: u32,
}

#[derive(Clone, Copy)]
struct Layout {
    segment: usize,
    segments: u64,
    last_len: usize,
}

impl Layout {
    /// The segments of a sealed object of `total` bytes with this header, and its plaintext
    /// length, which must be at most `max_plain`.
    fn of(header: &[u8], total: u64, max_plain: u64) -> Result<(Layout, u64), SealError> {
        if &header[..8] != MAGIC || !SEGMENT_LOG2_RANGE.contains(&header[8]) {
            return Err(SealError::Header);
        }
        let segment = 1usize << header[8];
        let sealed_segment = (segment + TAG_LEN) as u64;
        let body = total
            .checked_sub(HEADER_LEN as u64)
            .ok_or(SealError::Length)?;
        let segments = body.div_ceil(sealed_segment);
        let last_len = body - segments.saturating_sub(1) * sealed_segment;
        if segments == 0 || segments > u64::from(u32::MAX) || last_len < TAG_LEN as u64 {
            return Err(SealError::Length);
        }
        let plain = body - segments * TAG_LEN as u64;
        if plain > max_plain {
            return Err(SealError::TooLarge(plain));
        }
        let layout = Layout {
            segment,
            segments,
            last_len: last_len as usize,
        };
        Ok((layout, plain))
    }
}

/// The associated data of every segment: the header and the object's name.
fn aad(header: &[u8], object: &str) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(object.as_bytes());
    aad
}

/// The most bytes a sealed object of at most `max_plain` plaintext bytes can have (with the
/// smallest segments a reader accepts): a bound to check before reading a body.
pub(crate) fn max_sealed_len(max_plain: u64) -> u64 {
    let smallest = 1u64 << SEGMENT_LOG2_RANGE.start();
    let segments = max_plain.div_ceil(smallest).max(1);
    max_plain
        .saturating_add(HEADER_LEN as u64)
        .saturating_add(segments.saturating_mul(TAG_LEN as u64))
}

impl Opener {
    /// `total` is the sealed object's length; its plaintext must be at most `max_plain` bytes.
    pub(crate) fn new(key: &ObjectKey, object: &str, total: u64, max_plain: u64) -> Opener {
        Opener {
            key: key.aead(),
            object: object.to_string(),
            total,
            max_plain,
            header: Vec::with_capacity(HEADER_LEN),
            aad: Vec::new(),
            layout: None,
            out: Vec::new(),
            segment_start: 0,
            counter: 0,
        }
    }

    /// The plaintext length the header and `total` imply, checked against the limit before
    /// any buffer for it exists.
    fn lay_out(&mut self) -> Result<(), SealError> {
        let (layout, plain) = Layout::of(&self.header, self.total, self.max_plain)?;
        self.aad = aad(&self.header, &self.object);
        // The plaintext plus one sealed segment: the most the buffer ever holds.
        self.out = Vec::with_capacity(plain as usize + TAG_LEN);
        self.layout = Some(layout);
        Ok(())
    }

    /// Opens a whole sealed object read into `buf`, in place: the buffer that held the
    /// ciphertext becomes the plaintext, so the object is never in memory twice.
    pub(crate) fn open_in_place(
        key: &ObjectKey,
        object: &str,
        mut buf: Vec<u8>,
        max_plain: u64,
    ) -> Result<Vec<u8>, SealError> {
        let header: [u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(SealError::Length)?;
        let (layout, plain) = Layout::of(&header, buf.len() as u64, max_plain)?;
        let aad = aad(&header, object);
        let key = key.aead();
        let (mut read, mut write) = (HEADER_LEN, 0);
        for i in 0..layout.segments {
            let last = i + 1 == layout.segments;
            let len = if last {
                layout.last_len
            } else {
                layout.segment + TAG_LEN
            };
            let opened = key
                .open_in_place(
                    nonce(&header[9..], i as u32, last),
                    Aad::from(&aad[..]),
                    &mut buf[read..read + len],
                )
                .map_err(|_| SealError::Authentication)?
                .len();
            buf.copy_within(read..read + opened, write);
            read += len;
            write += opened;
        }
        debug_assert_eq!(write as u64, plain);
        buf.truncate(write);
        Ok(buf)
    }

    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<(), SealError> {
        if self.header.len() < HEADER_LEN {
            let take = data.len().min(HEADER_LEN - self.header.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() < HEADER_LEN {
                return Ok(());
            }
            self.lay_out()?;
        }
        let Some(layout) = self.layout else {
            return Err(SealError::Header);
        };
        while !data.is_empty() {
            if u64::from(self.counter) >= layout.segments {
                return Err(SealError::Length);
            }
            let last = u64::from(self.counter) + 1 == layout.segments;
            let want = if last {
                layout.last_len
            } else {
                layout.segment + TAG_LEN
            };
            let have = self.out.len() - self.segment_start;
            let take = data.len().min(want - have);
            self.out.extend_from_slice(&data[..take]);
            data = &data[take..];
            if have + take == want {
                self.open_segment(last)?;
            }
        }
        Ok(())
    }

    fn open_segment(&mut self, last: bool) -> Result<(), SealError> {
        let prefix = &self.header[9..];
        let opened = self
            .key
            .open_in_place(
                nonce(prefix, self.counter, last),
                Aad::from(&self.aad[..]),
                &mut self.out[self.segment_start..],
            )
            .map_err(|_| SealError::Authentication)?
            .len();
        self.out.truncate(self.segment_start + opened);
        self.segment_start = self.out.len();
        self.counter += 1;
        Ok(())
    }

    /// The plaintext, once every segment arrived and opened.
    pub(crate) fn finish(self) -> Result<Vec<u8>, SealError> {
        match self.layout {
            Some(l) if u64::from(self.counter) == l.segments => Ok(self.out),
            _ => Err(SealError::Length),
        }
    }

    /// Opens a whole sealed object held in memory.
    #[cfg(test)]
    pub(crate) fn open_all(
        key: &ObjectKey,
        object: &str,
        sealed: &[u8],
        max_plain: u64,
    ) -> Result<Vec<u8>, SealError> {
        let mut opener = Opener::new(key, object, sealed.len() as u64, max_plain);
        opener.push(sealed)?;
        opener.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_every_boundary_in_any_pieces() {
        let key = ObjectKey::generate();
        let seg = Sealer::segment_len();
        for n in [0, 1, seg - 1, seg, seg + 1, 3 * seg, 3 * seg + 17] {
            let plain = sample(n);
            let sealed = Sealer::seal_all(&key, "o/ab/x", &plain);
            assert_eq!(sealed.len() as u64, sealed_len(n as u64), "n = {n}");
            assert_eq!(&sealed[..8], MAGIC);
            assert_eq!(
                Opener::open_all(&key, "o/ab/x", &sealed, u64::MAX).unwrap(),
                plain
            );
            assert_eq!(
                Opener::open_in_place(&key, "o/ab/x", sealed.clone(), u64::MAX).unwrap(),
                plain
            );
            assert!(sealed.len() as u64 <= max_sealed_len(n as u64));
            // Arbitrary piece sizes, as a network stream delivers them.
            for piece in [1, 7, 4096, seg + 5] {
                let mut o = Opener::new(&key, "o/ab/x", sealed.len() as u64, u64::MAX);
                for p in sealed.chunks(piece) {
                    o.push(p).unwrap();
                }
                assert_eq!(o.finish().unwrap(), plain, "n = {n}, piece = {piece}");
            }
        }
    }

    #[test]
    fn plaintext_never_appears_and_each_seal_differs() {
        let key = ObjectKey::generate();
        let plain = b"a recognisable plaintext run, long enough to search for".repeat(50);
        let a = Sealer::seal_all(&key, "o/1", &plain);
        let b = Sealer::seal_all(&key, "o/1", &plain);
        assert_ne!(a, b, "a fresh nonce prefix each time");
        assert!(!a.windows(16).any(|w| plain.windows(16).any(|p| p == w)));
    }

    #[test]
    fn refuses_tampering_truncation_wrong_key_and_wrong_name() {
        let key = ObjectKey::generate();
        let seg = Sealer::segment_len();
        let plain = sample(2 * seg + 100);
        let sealed = Sealer::seal_all(&key, "o/1", &plain);
        let open = |bytes: &[u8], name: &str, key: &ObjectKey| {
            Opener::open_all(key, name, bytes, u64::MAX)
        };
        for at in [3, 9, 20, seg + 40, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(open(&bad, "o/1", &key).is_err(), "flip at {at}");
            assert!(
                Opener::open_in_place(&key, "o/1", bad, u64::MAX).is_err(),
                "flip at {at}"
            );
        }
        // Dropping the last segment leaves a stream whose new last segment was not sealed
        // as last.
        let cut = HEADER_LEN + 2 * (seg + TAG_LEN);
        assert_eq!(
            open(&sealed[..cut], "o/1", &key),
            Err(SealError::Authentication)
        );
        assert!(open(&sealed[..sealed.len() - 3], "o/1", &key).is_err());
        assert_eq!(open(&sealed, "o/2", &key), Err(SealError::Authentication));
        assert_eq!(
            open(&sealed, "o/1", &ObjectKey::generate()),
            Err(SealError::Authentication)
        );
        assert_eq!(
            open(b"plain jpeg bytes", "o/1", &key),
            Err(SealError::Header)
        );
        assert_eq!(open(&sealed[..10], "o/1", &key), Err(SealError::Length));
    }

    #[test]
    fn declared_size_is_checked_before_allocating() {
        let key = ObjectKey::generate();
        let sealed = Sealer::seal_all(&key, "o/1", &sample(1000));
        let mut o = Opener::new(&key, "o/1", 10_000_000_000, 10_000);
        assert!(matches!(
            o.push(&sealed[..HEADER_LEN]),
            Err(SealError::TooLarge(n)) if n > 10_000
        ));
        assert_eq!(
            Opener::open_all(&key, "o/1", &sealed, 999),
            Err(SealError::TooLarge(1000))
        );
    }
}
