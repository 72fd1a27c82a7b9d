//! Rows of the metadata store as Rust types.

use std::fmt;
use std::str::FromStr;

use crate::pipeline::SourceFormat;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Unique, immutable, `[a-z0-9_-]{1,64}`; also the account's key in every table.
    pub name: String,
    pub plan: String,
    pub(crate) status: AccountStatus,
    pub(crate) created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Suspended,
    /// Erasure started and not finished: nothing of the account is served, and a restart
    /// resumes the erasure.
    Erasing,
}

impl AccountStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Erasing => "erasing",
        }
    }
}

impl FromStr for AccountStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "active" => Ok(AccountStatus::Active),
            "suspended" => Ok(AccountStatus::Suspended),
            "erasing" => Ok(AccountStatus::Erasing),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Visibility {
    #[default]
    Public,
    Private,
}

impl Visibility {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

impl FromStr for Visibility {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One original as an account sees it. `id` is the first 16 hex digits of `hash`, the
/// SHA-256 of the bytes; the object store keeps the bytes once under `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub(crate) account: String,
    pub id: String,
    pub hash: String,
    pub(crate) format: SourceFormat,
    pub width: u32,
    pub height: u32,
    pub size: u64,
    pub(crate) original_filename: String,
    /// Unix seconds.
    pub(crate) uploaded_at: i64,
    pub(crate) visibility: Visibility,
    /// `rrggbb`, computed at upload; `None` for images stored before it was.
    pub(crate) dominant_color: Option<String>,
    /// Whether the original may carry transparency, and its frames (1 for a still), from
    /// the probe at upload; `None` for images stored before they were recorded.
    pub(crate) has_alpha: Option<bool>,
    pub(crate) frames: Option<u32>,
}

/// What `Store::put_image` records.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub account: String,
    pub id: String,
    pub hash: String,
    pub format: SourceFormat,
    pub width: u32,
    pub height: u32,
    pub size: u64,
    pub original_filename: String,
    pub visibility: Visibility,
    pub dominant_color: Option<String>,
    pub has_alpha: Option<bool>,
    pub frames: Option<u32>,
}

/// What an upload may do to what the account already holds (`Store::put_image`). The
/// default changes nothing that is there: every conflict is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placement {
    /// Another image at the same stem (`a.png` for an upload to `a.jpg`) is replaced: the
    /// path points at the new image, and the old image goes when no path is left to it.
    /// Without it such an upload is a conflict.
    pub overwrite: bool,
    /// The uploader asked for `NewImage::visibility` explicitly: bytes the account already
    /// holds with the other visibility are a conflict (visibility is the image's, shared by
    /// all its paths), never silently kept or changed.
    pub visibility_explicit: bool,
}

/// What `Store::put_image` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathOutcome {
    /// The account did not have these bytes before.
    pub(crate) is_new: bool,
    /// The path pointed at another image which has no path left and was deleted:
    /// `(image id, content hash)`, for cache purge and orphan sweeping.
    pub(crate) orphaned: Option<(String, String)>,
}

/// Names the bare URL form or routes could mistake for something else.
const RESERVED_ACCOUNT_NAMES: &[&str] = &[
    "i", "api", "admin", "health", "metrics", "live", "ready", "static", "assets", "console",
];

/// Account names are `[a-z0-9_-]{1,64}` and not a reserved top-level route.
pub(crate) fn validate_account_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 64 || !ok_chars {
        return Err(format!(
            "account name `{name}` must be 1 to 64 of a-z, 0-9, `_`, `-`"
        ));
    }
    if RESERVED_ACCOUNT_NAMES.contains(&name) {
        return Err(format!("account name `{name}` is reserved"));
    }
    Ok(())
}
