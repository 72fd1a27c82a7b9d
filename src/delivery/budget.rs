//! What a URL may make the node render: the account's size policy (allowed widths, maximum
//! quality) and the budgets of unsigned URLs (AVIF pixels).
//!
//! The policies rewrite the resolved `Transform` before its canonical form is taken, so the
//! cache key is that of what is really rendered, and URLs that differ only by what a policy
//! removes share one variant. No I/O, no pixels.

use super::url::{TransformDefaults, TransformParams};
use crate::error::{ErrorCode, HttpError};
use crate::pipeline::{Limits, OutputFormat, Transform, plan};
use crate::ratelimit::RateState;
use crate::state::AppState;
use crate::store::AccountSettings;

/// Applies the account's `allowed_widths` (in device pixels, after `dpr`) and `max_quality`.
/// A width not in the list snaps up to the next allowed one (the largest when it is over all
/// of them), the height following in proportion, or is a 400 when the account chose
/// `widths_policy = "refuse"`.
pub(super) fn apply_size_policy(t: &mut Transform, s: &AccountSettings) -> Result<(), HttpError> {
    if let Some(max) = s.max_quality {
        t.quality = t.quality.min(max.max(1));
    }
    let Some(width) = t.width else {
        return Ok(());
    };
    if s.allowed_widths.is_empty() || s.allowed_widths.contains(&width) {
        return Ok(());
    }
    if s.widths_policy == "refuse" {
        let list: Vec<String> = s.allowed_widths.iter().map(u32::to_string).collect();
        return Err(HttpError::validation(format!(
            "width {width} is not one this account serves (allowed, in device pixels: {})",
            list.join(", ")
        )));
    }
    let snapped = s
        .allowed_widths
        .iter()
        .copied()
        .filter(|&w| w >= width)
        .min()
        .or_else(|| s.allowed_widths.iter().copied().max())
        .unwrap_or(width);
    if let Some(h) = t.height {
        let scaled = (u64::from(h) * u64::from(snapped) + u64::from(width) / 2) / u64::from(width);
        t.height = Some(u32::try_from(scaled.max(1)).unwrap_or(u32::MAX));
    }
    t.width = Some(snapped);
    Ok(())
}

/// Pixels `t` would encode from a source of `source` (oriented) pixels; an output the planner
/// refuses counts as 0 (the render refuses it with its own error).
pub(super) fn output_pixels(source: (u32, u32), t: &Transform, limits: &Limits) -> u64 {
    let Ok(p) = plan(source, t, limits) else {
        return 0;
    };
    let (w, h) = p.output_size();
    u64::from(w) * u64::from(h)
}

/// Shrinks `t` so that its output has at most `budget` pixels, keeping its proportions (an
/// unsigned URL over its encode budget is served smaller, like `dpr` beyond the output limit,
/// and cached under the smaller size's key).
pub(super) fn fit_pixels(source: (u32, u32), t: &mut Transform, limits: &Limits, budget: u64) {
    let Ok(p) = plan(source, t, limits) else {
        return;
    };
    let (w, h) = p.output_size();
    let pixels = u64::from(w) * u64::from(h);
    if pixels <= budget || pixels == 0 {
        return;
    }
    let factor = (budget as f64 / pixels as f64).sqrt();
    let shrink = |side: u32| ((f64::from(side) * factor).floor() as u32).max(1);
    match (t.width, t.height) {
        // Both sides given: both shrink, so the box keeps its ratio (and `cover` its crop).
        (Some(_), Some(_)) => {
            t.width = Some(shrink(w));
            t.height = Some(shrink(h));
        }
        // One side or none: that side (or the width) decides, the other follows.
        (None, Some(_)) => t.height = Some(shrink(h)),
        _ => t.width = Some(shrink(w)),
    }
}

/// `dpr` pushing the output past `limits.max_output_pixels` is clamped like `dpr` past the
/// side limit (`TransformParams::resolve`): `t` is shrunk, shape kept, to the largest size
/// under the limit. A size already over the limit without `dpr` is left for the render to
/// refuse (400), as the spec wants for an explicit over-limit size.
pub(super) fn clamp_dpr(
    source: (u32, u32),
    params: &TransformParams,
    defaults: &TransformDefaults,
    t: &mut Transform,
    limits: &Limits,
) {
    if params.dpr.is_none_or(|d| d.hundredths() <= 100) {
        return;
    }
    let unbounded = Limits {
        max_output_pixels: u64::MAX,
        ..limits.clone()
    };
    if output_pixels(source, t, &unbounded) <= limits.max_output_pixels {
        return;
    }
    let without = TransformParams {
        dpr: None,
        ..params.clone()
    }
    .resolve(defaults, limits);
    if output_pixels(source, &without, limits) > 0 {
        fit_pixels(source, t, &unbounded, limits.max_output_pixels);
    }
}

/// What one render budget (`label`: client, image) said of a new render: a refusal is a 429
/// with `Retry-After`, counted in `imgnode_delivery_renders_refused_total`. `None`: the
/// budget is off.
/// Frames of an animation that count as one render against the per-client render budget:
/// a 100-frame animation (about 0.4 s of CPU at 240 px, `cargo bench --bench animation`)
/// costs what ten stills do.
const FRAMES_PER_RENDER: u32 = 10;

/// What a new render costs against the per-client render budget: 1 for a still or a single
/// frame, one per `FRAMES_PER_RENDER` started frames for an output that stays animated
/// (capped at the budget's burst by the limiter, so it can always pass on a full allowance).
pub(super) fn render_cost(frames: Option<u32>, output: OutputFormat, t: &Transform) -> u32 {
    let frames = frames.unwrap_or(1);
    if frames > 1 && output.animates() && t.animated && t.frame.is_none() {
        frames.div_ceil(FRAMES_PER_RENDER)
    } else {
        1
    }
}

pub(super) fn take(
    state: &AppState,
    label: &str,
    rate: Option<RateState>,
    message: &str,
) -> Result<(), HttpError> {
    match rate {
        Some(RateState {
            retry_after: Some(secs),
            ..
        }) => {
            state
                .metrics
                .renders_refused_total
                .with_label_values(&[label])
                .inc();
            Err(HttpError {
                retry_after: Some(secs),
                ..HttpError::new(ErrorCode::RateLimited, message)
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Fit;

    #[test]
    fn an_animation_costs_one_render_per_ten_frames_when_it_stays_animated() {
        let t = transform(Some(100), None, Fit::Contain);
        assert_eq!(render_cost(Some(100), OutputFormat::Webp, &t), 10);
        assert_eq!(render_cost(Some(101), OutputFormat::Gif, &t), 11);
        assert_eq!(render_cost(Some(3), OutputFormat::Webp, &t), 1);
        assert_eq!(render_cost(None, OutputFormat::Webp, &t), 1);
        // The first frame only: a still's price.
        assert_eq!(render_cost(Some(100), OutputFormat::Jpeg, &t), 1);
        let one = Transform {
            frame: Some(5),
            ..t.clone()
        };
        assert_eq!(render_cost(Some(100), OutputFormat::Webp, &one), 1);
        let still = Transform {
            animated: false,
            ..t
        };
        assert_eq!(render_cost(Some(100), OutputFormat::Gif, &still), 1);
    }

    fn transform(w: Option<u32>, h: Option<u32>, fit: Fit) -> Transform {
        Transform {
            width: w,
            height: h,
            fit,
            ..crate::delivery::url::TransformParams::default()
                .resolve(&Default::default(), &Limits::default())
        }
    }

    fn policy(widths: &[u32], rule: &str) -> AccountSettings {
        AccountSettings {
            allowed_widths: widths.to_vec(),
            widths_policy: rule.into(),
            ..AccountSettings::default()
        }
    }

    #[test]
    fn widths_snap_up_to_the_next_allowed_one_with_the_height_in_proportion() {
        let s = policy(&[320, 640, 1280], "snap");
        let mut t = transform(Some(500), Some(250), Fit::Cover);
        apply_size_policy(&mut t, &s).unwrap();
        assert_eq!((t.width, t.height), (Some(640), Some(320)));
        let mut t = transform(Some(4000), None, Fit::Cover);
        apply_size_policy(&mut t, &s).unwrap();
        assert_eq!(t.width, Some(1280), "over every width: the largest");
        let mut t = transform(Some(320), None, Fit::Cover);
        apply_size_policy(&mut t, &s).unwrap();
        assert_eq!(t.width, Some(320));
        let mut t = transform(None, Some(77), Fit::Cover);
        apply_size_policy(&mut t, &s).unwrap();
        assert_eq!(
            (t.width, t.height),
            (None, Some(77)),
            "heights are not listed"
        );
    }

    #[test]
    fn refuse_policy_and_max_quality() {
        let mut s = policy(&[320, 640], "refuse");
        s.max_quality = Some(70);
        let mut t = transform(Some(500), None, Fit::Cover);
        let err = apply_size_policy(&mut t, &s).unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError);
        assert!(err.message.contains("320, 640"), "{}", err.message);
        let mut t = transform(Some(640), None, Fit::Cover);
        t.quality = 95;
        apply_size_policy(&mut t, &s).unwrap();
        assert_eq!(t.quality, 70);
    }

    #[test]
    fn outputs_are_shrunk_to_the_budget_keeping_their_shape() {
        let limits = Limits::default();
        let source = (4000, 3000);
        // The attack of the issue: 2828x2828 fill is 8 MP.
        let mut t = transform(Some(2828), Some(2828), Fit::Fill);
        assert_eq!(output_pixels(source, &t, &limits), 2828 * 2828);
        fit_pixels(source, &mut t, &limits, 2_000_000);
        let (w, h) = (t.width.unwrap(), t.height.unwrap());
        assert_eq!(w, h);
        assert!(
            u64::from(w) * u64::from(h) <= 2_000_000 && w > 1400,
            "{w}x{h}"
        );
        // No size at all: the whole 12 MP source, shrunk by its width.
        let mut t = transform(None, None, Fit::Cover);
        fit_pixels(source, &mut t, &limits, 2_000_000);
        assert!(output_pixels(source, &t, &limits) <= 2_000_000);
        assert_eq!(t.height, None);
        // Under the budget: untouched.
        let mut t = transform(Some(800), None, Fit::Cover);
        fit_pixels(source, &mut t, &limits, 2_000_000);
        assert_eq!((t.width, t.height), (Some(800), None));
    }
}
