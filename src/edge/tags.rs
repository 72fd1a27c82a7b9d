//! Cache tags: the names a CDN files each image answer under, so one purge request removes
//! every URL of an image, a path, a preset or an account at once.
//!
//! An answer carries at most four tags:
//!
//! | tag | on | purged when |
//! |---|---|---|
//! | `a.{account}` | every answer of the account | settings that change rendering, suspension, erasure |
//! | `i.{account}.{image id}` | every answer of the image, whatever its path or transform | the image is deleted or made private |
//! | `p.{account}.{stem}`, or `ph.{account}.{hash}` | answers through that path | the path is deleted or points at other bytes |
//! | `r.{account}.{preset}` | answers that named the preset | the preset is edited or deleted |
//!
//! Every tag is at most 128 characters of `A-Z a-z 0-9 . _ -`, so the same tag is valid in
//! every header and purge API: Akamai's `Edge-Cache-Tag` allows 128 characters a tag and no
//! `/` or `:`, Cloudflare's `Cache-Tag` 1 024 characters a tag and 16 KB a header (and
//! compares tags case-insensitively: two paths differing only in case are purged together,
//! never one missed), Fastly's `Surrogate-Key` 1 024 bytes a key and 16 KB a header. A path
//! stem with a folder separator or another character outside that set, or too long, is
//! named by the first 128 bits of its SHA-256 instead (under its own prefix `ph.`, so a
//! hashed tag never equals a raw one). Account names (`a-z 0-9 _ -`), image ids (hex) and
//! preset names (`A-Z a-z 0-9 _ -`) are already in the set; `.` separates the parts because
//! none of them contains it.

use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

/// Longest tag any supported CDN accepts everywhere (Akamai's limit).
pub(crate) const MAX_TAG_LEN: usize = 128;

/// A response header that carries the tags, one per CDN family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagHeader {
    /// Fastly, Varnish xkey: space separated.
    SurrogateKey,
    /// Cloudflare: comma separated.
    CacheTag,
    /// Akamai: comma separated.
    EdgeCacheTag,
}

impl TagHeader {
    pub(crate) const ALL: [TagHeader; 3] = [
        TagHeader::SurrogateKey,
        TagHeader::CacheTag,
        TagHeader::EdgeCacheTag,
    ];

    /// The header's name as operators write it in `edge.tag_headers`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TagHeader::SurrogateKey => "Surrogate-Key",
            TagHeader::CacheTag => "Cache-Tag",
            TagHeader::EdgeCacheTag => "Edge-Cache-Tag",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<TagHeader> {
        TagHeader::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
    }

    fn header_name(self) -> HeaderName {
        match self {
            TagHeader::SurrogateKey => HeaderName::from_static("surrogate-key"),
            TagHeader::CacheTag => HeaderName::from_static("cache-tag"),
            TagHeader::EdgeCacheTag => HeaderName::from_static("edge-cache-tag"),
        }
    }

    fn separator(self) -> &'static str {
        match self {
            TagHeader::SurrogateKey => " ",
            TagHeader::CacheTag | TagHeader::EdgeCacheTag => ",",
        }
    }
}

pub(crate) fn account(account: &str) -> String {
    format!("a.{account}")
}

pub(crate) fn image(account: &str, id: &str) -> String {
    format!("i.{account}.{id}")
}

/// The tag of a path, by its stem (`folder/name` without the extension: every extension of a
/// stem answers from the same image).
pub(crate) fn path(account: &str, stem: &str) -> String {
    let raw_ok = !stem.is_empty()
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && 3 + account.len() + stem.len() <= MAX_TAG_LEN;
    if raw_ok {
        return format!("p.{account}.{stem}");
    }
    let digest = Sha256::digest(stem.as_bytes());
    format!("ph.{account}.{}", hex::encode(&digest[..16]))
}

pub(crate) fn preset(account: &str, name: &str) -> String {
    format!("r.{account}.{name}")
}

/// The tags of one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TagSet(Vec<String>);

impl TagSet {
    /// The tags of an answer of `image_id` reached through `stem`, with the preset it named.
    pub(crate) fn for_answer(
        account_name: &str,
        image_id: &str,
        stem: &str,
        preset_name: Option<&str>,
    ) -> TagSet {
        let mut tags = vec![
            account(account_name),
            image(account_name, image_id),
            path(account_name, stem),
        ];
        if let Some(name) = preset_name {
            tags.push(preset(account_name, name));
        }
        TagSet(tags)
    }

    /// The configured headers with these tags.
    pub(crate) fn headers<'a>(
        &'a self,
        which: &'a [TagHeader],
    ) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'a {
        which.iter().filter_map(|h| {
            // Owned bytes handed over, not copied (this runs on every hit).
            let joined = bytes::Bytes::from(self.0.join(h.separator()));
            let value = HeaderValue::from_maybe_shared(joined).ok()?;
            Some((h.header_name(), value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(tag: &str) -> bool {
        tag.len() <= MAX_TAG_LEN
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    #[test]
    fn tags_stay_within_every_cdns_limits() {
        let longest_account = "a".repeat(64);
        let longest_preset = "P".repeat(50);
        for stem in [
            "cat",
            "photos/2024/cat",
            "Ünïcode name",
            "with.dot",
            &"x".repeat(61),
            &"x".repeat(62),
            &"deep/".repeat(200),
        ] {
            for account in ["acme", longest_account.as_str()] {
                let set =
                    TagSet::for_answer(account, "0123456789abcdef", stem, Some(&longest_preset));
                for tag in &set.0 {
                    assert!(valid(tag), "{tag}");
                }
                // Akamai: 128 tags; Cloudflare and Fastly: 16 KB a header.
                let headers: Vec<_> = set.headers(&TagHeader::ALL).collect();
                assert_eq!(headers.len(), 3);
                for (_, v) in headers {
                    assert!(v.len() < 1024, "{v:?}");
                }
            }
        }
    }

    #[test]
    fn safe_stems_are_readable_and_others_hashed_apart() {
        assert_eq!(path("acme", "cat-1_b"), "p.acme.cat-1_b");
        let folder = path("acme", "photos/cat");
        assert!(
            folder.starts_with("ph.acme.") && folder.len() == 8 + 32,
            "{folder}"
        );
        assert_ne!(folder, path("acme", "photos/dog"));
        assert_ne!(folder, path("other", "photos/cat"));
        // Too long for Akamai raw: hashed.
        let long = "x".repeat(126);
        assert!(path("acme", &long).starts_with("ph."));
        // Accounts with dashes cannot collide with another account's path: `.` separates.
        assert_ne!(path("a-b", "c"), path("a", "b-c"));
    }

    #[test]
    fn headers_use_each_cdns_separator() {
        let set = TagSet::for_answer("acme", "00ff", "cat", None);
        let h: Vec<(HeaderName, HeaderValue)> = set.headers(&TagHeader::ALL).collect();
        assert_eq!(h[0].0, "surrogate-key");
        assert_eq!(h[0].1, "a.acme i.acme.00ff p.acme.cat");
        assert_eq!(h[1].0, "cache-tag");
        assert_eq!(h[1].1, "a.acme,i.acme.00ff,p.acme.cat");
        assert_eq!(h[2].0, "edge-cache-tag");
        assert_eq!(
            TagHeader::parse("surrogate-key"),
            Some(TagHeader::SurrogateKey)
        );
        assert_eq!(TagHeader::parse("X-Tag"), None);
    }
}
