//! Resolution: a preset's parameters overlaid with the URL's ([`TransformParams::overlay`]),
//! then account defaults applied and `dpr` folded into device pixels
//! ([`TransformParams::resolve`]), giving the [`Transform`] that is rendered and keyed on.
//!
//! Owns what absent and relative values mean. Must never parse or spell a URL, look up a
//! preset or an account (the caller passes in their values), or refuse anything: a `w`/`h`
//! over the output limit is left for the pipeline's 400; only `dpr`'s excess is clamped here.

use super::{Aspect, RotateParam, TransformParams};
use crate::pipeline::spec::{Fit, Limits, Rotate, Transform};

/// Per-account settings that fill parameters the URL leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformDefaults {
    /// Quality when `q` is absent (1..=100; out-of-range values are clamped).
    pub(crate) quality: u8,
    /// Fit when `fit` is absent.
    pub(crate) fit: Fit,
    /// Bound for requests that give neither `w` nor `h` (device pixels).
    pub(crate) max_width: Option<u32>,
    /// Bound for requests that give neither `w` nor `h` (device pixels).
    pub(crate) max_height: Option<u32>,
}

impl Default for TransformDefaults {
    /// The node defaults: quality 80, `cover`, no size bound.
    fn default() -> Self {
        TransformDefaults {
            quality: Transform::DEFAULT_QUALITY,
            fit: Fit::Cover,
            max_width: None,
            max_height: None,
        }
    }
}

impl TransformParams {
    /// No transform parameter at all, not even a preset or `format=auto`: the request may be
    /// answered with the stored original's bytes (when the extension matches). Note that a
    /// parameter equal to its default (`q=80`) still counts: it asks for a re-encode. Call this
    /// after presets have been overlaid.
    pub(crate) fn is_empty(&self) -> bool {
        *self == TransformParams::default()
    }

    /// `self` (a preset's values) overridden by every parameter `over` (the URL) gives.
    /// `format=auto` from either side applies unless the URL names a format; the preset name
    /// is `over`'s, else `self`'s.
    pub(crate) fn overlay(&self, over: &TransformParams) -> TransformParams {
        TransformParams {
            w: over.w.or(self.w),
            h: over.h.or(self.h),
            fit: over.fit.or(self.fit),
            aspect: over.aspect.or(self.aspect),
            q: over.q.or(self.q),
            dpr: over.dpr.or(self.dpr),
            crop: over.crop.or(self.crop),
            grayscale: over.grayscale.or(self.grayscale),
            blur: over.blur.or(self.blur),
            sharpen: over.sharpen.or(self.sharpen),
            rotate: over.rotate.or(self.rotate),
            flip: over.flip.or(self.flip),
            preset: over.preset.clone().or_else(|| self.preset.clone()),
            format_auto: over.format_auto || (self.format_auto && over.format.is_none()),
            format: over
                .format
                .or(if over.format_auto { None } else { self.format }),
            bg: over.bg.or(self.bg),
            frame: over.frame.or(self.frame),
            animated: over.animated.or(self.animated),
        }
    }

    /// Applies account defaults and folds `dpr` into pixel sizes.
    ///
    /// - `q`/`fit` fall back to `defaults`; everything else to [`Transform::default`].
    /// - `rotate=auto` is `R0` (EXIF orientation is always applied); `aspect=original` is no
    ///   forced ratio; `W:H` is reduced (`32:18` → `16:9`) so equal ratios share a cache entry.
    /// - `dpr` multiplies `w` and `h` (rounded to nearest). When that product exceeds
    ///   `limits.max_output_side`, the ratio is lowered so the larger side lands on the limit
    ///   (both sides by the same factor, keeping the requested shape), but never below 1: a
    ///   `w`/`h` over the limit on its own is left for the pipeline to refuse with a 400, as
    ///   the spec wants for over-limit output, while `dpr`'s excess is silently clamped.
    /// - `frame=0` resolves to `animated=false` (both are the first frame), and `animated` means
    ///   nothing beside another `frame`.
    /// - With neither `w` nor `h`, `dpr` has no effect, and when the account sets
    ///   `max_width`/`max_height` the output is bounded by them with [`Fit::ScaleDown`]
    ///   (never enlarged, aspect kept), whatever `fit` says: `fit` means nothing without a box.
    pub fn resolve(&self, defaults: &TransformDefaults, limits: &Limits) -> Transform {
        let (mut width, mut height) = (self.w, self.h);
        if let Some(dpr) = self.dpr {
            // Integer arithmetic: `10 * 1.15` must be 11.5 and round to 12, which f64 misses.
            let largest = u128::from(width.unwrap_or(0).max(height.unwrap_or(0)));
            let limit = u128::from(limits.max_output_side);
            let dpr = u128::from(dpr.hundredths());
            // The factor as a fraction: dpr, or limit/largest when dpr overshoots the limit,
            // but never below 1.
            let (num, den) = if largest * dpr <= limit * 100 {
                (dpr, 100)
            } else if limit > largest {
                (limit, largest)
            } else {
                (1, 1)
            };
            if den > 0 {
                // Round half up: (2·s·num + den) / (2·den).
                let scale = |side: u32| {
                    let scaled = (2 * u128::from(side) * num + den) / (2 * den);
                    u32::try_from(scaled).unwrap_or(u32::MAX)
                };
                width = width.map(scale);
                height = height.map(scale);
            }
        }
        let mut fit = self.fit.unwrap_or(defaults.fit);
        if width.is_none()
            && height.is_none()
            && (defaults.max_width.is_some() || defaults.max_height.is_some())
        {
            width = defaults.max_width;
            height = defaults.max_height;
            fit = Fit::ScaleDown;
        }
        Transform {
            width,
            height,
            fit,
            aspect: match self.aspect {
                Some(Aspect::Ratio(w, h)) => Some(reduce_ratio(w, h)),
                Some(Aspect::Original) | None => None,
            },
            quality: self.q.unwrap_or(defaults.quality).clamp(1, 100),
            crop: self.crop.unwrap_or_default(),
            grayscale: self.grayscale.unwrap_or(false),
            blur: self.blur.unwrap_or(0),
            sharpen: self.sharpen.unwrap_or(0),
            rotate: match self.rotate {
                Some(RotateParam::Degrees(r)) => r,
                Some(RotateParam::Auto) | None => Rotate::R0,
            },
            flip: self.flip,
            background: self.bg.unwrap_or_default(),
            // One spelling per render: `frame=0` is the first frame, which is what
            // `animated=false` asks for, and a picked frame is a still whatever `animated` says.
            frame: self.frame.filter(|&n| n > 0),
            animated: match self.frame {
                Some(0) => false,
                Some(_) => true,
                None => self.animated.unwrap_or(true),
            },
        }
    }
}

fn gcd(mut a: u8, mut b: u8) -> u8 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

pub(super) fn reduce_ratio(w: u8, h: u8) -> (u8, u8) {
    match gcd(w, h) {
        0 => (w, h),
        g => (w / g, h / g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::url::test_support::params;

    #[test]
    fn resolve_applies_defaults_and_dpr() {
        let limits = Limits::default();
        let account = TransformDefaults {
            quality: 65,
            fit: Fit::Contain,
            max_width: None,
            max_height: None,
        };
        let t = params("w=333&dpr=1.5&rotate=auto&aspect=32:18").resolve(&account, &limits);
        assert_eq!(t.width, Some(500)); // 499.5 rounds to nearest (half away from zero)
        assert_eq!(t.height, None);
        assert_eq!(t.quality, 65);
        assert_eq!(t.fit, Fit::Contain);
        assert_eq!(t.rotate, Rotate::R0);
        assert_eq!(t.aspect, Some((16, 9)));
        let t = params("q=90&fit=fill&rotate=90").resolve(&account, &limits);
        assert_eq!((t.quality, t.fit, t.rotate), (90, Fit::Fill, Rotate::R90));
        // dpr without a size does nothing.
        assert_eq!(
            params("dpr=3").resolve(&TransformDefaults::default(), &limits),
            Transform::default()
        );
    }

    #[test]
    fn dpr_excess_is_clamped_keeping_the_shape() {
        let defaults = TransformDefaults::default();
        let limits = Limits {
            max_output_side: 5000,
            ..Limits::default()
        };
        let t = params("w=4000&h=1000&dpr=3").resolve(&defaults, &limits);
        assert_eq!((t.width, t.height), (Some(5000), Some(1250)));
        let t = params("h=2000&dpr=4").resolve(&defaults, &limits);
        assert_eq!(t.height, Some(5000));
        // A size over the limit by itself is not clamped: the pipeline refuses it with a 400.
        let t = params("w=8000&h=100&dpr=2").resolve(&defaults, &limits);
        assert_eq!((t.width, t.height), (Some(8000), Some(100)));
        let t = params("w=8000").resolve(&defaults, &limits);
        assert_eq!(t.width, Some(8000));
        // Exactly at the limit.
        let t = params("w=2500&dpr=2").resolve(&defaults, &limits);
        assert_eq!(t.width, Some(5000));
    }

    #[test]
    fn account_max_size_bounds_unsized_requests() {
        let limits = Limits::default();
        let account = TransformDefaults {
            max_width: Some(2000),
            max_height: None,
            ..TransformDefaults::default()
        };
        let t = params("q=70&fit=cover").resolve(&account, &limits);
        assert_eq!(
            (t.width, t.height, t.fit),
            (Some(2000), None, Fit::ScaleDown)
        );
        let t = params("h=300").resolve(&account, &limits);
        assert_eq!((t.width, t.height, t.fit), (None, Some(300), Fit::Cover));
    }

    #[test]
    fn overlay_prefers_explicit_values() {
        let preset = params("w=100&h=100&q=50&format=auto&grayscale=1");
        let url = params("w=300&grayscale=0&p:thumb");
        let merged = preset.overlay(&url);
        assert_eq!(merged.w, Some(300));
        assert_eq!(merged.h, Some(100));
        assert_eq!(merged.q, Some(50));
        assert_eq!(merged.grayscale, Some(false));
        assert!(merged.format_auto);
        assert_eq!(merged.preset.as_deref(), Some("thumb"));
    }

    #[test]
    fn is_empty_only_without_any_parameter() {
        assert!(params("").is_empty());
        assert!(params("v=1&sig=abc").is_empty());
        assert!(!params("q=80").is_empty());
        assert!(!params("format=auto").is_empty());
        assert!(!params("p:x").is_empty());
    }
}
