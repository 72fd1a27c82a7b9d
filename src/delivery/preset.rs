//! Preset parameters: the JSON object a preset stores (`{"w": 400, "fit": "cover",
//! "format": "webp"}`), validated with the delivery URL grammar itself so a preset can hold
//! exactly what a URL can.
//!
//! Keys are the delivery keys, `format` included: `auto` (negotiate) or an output format
//! (`jpeg`/`jpg`, `png`, `webp`, `avif`, `jxl`, `gif`) that replaces the URL extension's format. A
//! key whose value is `null` is unset. Unknown keys are refused (a typo in a stored
//! preset must not be silently ignored), as are nested presets and signatures. Pure and
//! allocation-light; no I/O.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::url::{self, TransformParams};
use crate::pipeline::OutputFormat;

/// Keys a preset may set.
const PRESET_KEYS: &[&str] = &[
    "w",
    "h",
    "fit",
    "aspect",
    "q",
    "dpr",
    "crop",
    "grayscale",
    "blur",
    "sharpen",
    "rotate",
    "flip",
    "bg",
    "format",
    "frame",
    "animated",
];

/// A preset's parameters, ready to be overlaid by a URL's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PresetParams {
    pub(crate) params: TransformParams,
    /// An explicit output format, replacing the extension's.
    pub(crate) output: Option<OutputFormat>,
}

/// Validates a preset's `params` object; the error names the key and the accepted values.
pub(crate) fn parse(value: &Value) -> Result<PresetParams, String> {
    let Value::Object(map) = value else {
        return Err("params must be a JSON object of delivery parameters".into());
    };
    let query = object_query(map, "params")?;
    let mut parsed = url::parse_query(&query).map_err(|e| match e.key.as_str() {
        "format" => {
            "params.format must be one of auto, jpeg, jpg, png, webp, avif, jxl, gif".into()
        }
        key => format!("params.{key}: {}", e.message),
    })?;
    let output = parsed.params.format.take();
    Ok(PresetParams {
        params: parsed.params,
        output,
    })
}

/// A JSON object of delivery parameters (`{"w": 400, "format": "webp"}`) as a delivery query
/// string, for the URL grammar to validate: keys among [`PRESET_KEYS`], scalar values, `null`
/// skipped (unset). Errors are prefixed with
/// `what` (`params.w ...`).
pub(crate) fn object_query(
    map: &serde_json::Map<String, Value>,
    what: &str,
) -> Result<String, String> {
    let mut query = String::new();
    for (key, value) in map {
        if !PRESET_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "{what}.{key} is not a delivery parameter; use {}",
                PRESET_KEYS.join(", ")
            ));
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(format!("{what}.{key} must be a string, number or boolean")),
        };
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(key);
        query.push('=');
        query.extend(utf8_percent_encode(&text, NON_ALPHANUMERIC));
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn presets_hold_what_urls_hold() {
        let p = parse(&json!({"w": 400, "fit": "contain", "grayscale": true, "dpr": 1.5})).unwrap();
        assert_eq!(p.params.w, Some(400));
        assert_eq!(p.params.grayscale, Some(true));
        assert_eq!(p.params.dpr.map(|d| d.hundredths()), Some(150));
        assert_eq!(p.output, None);
        let p = parse(&json!({"format": "webp", "q": "60"})).unwrap();
        assert_eq!(p.output, Some(OutputFormat::Webp));
        assert_eq!(p.params.q, Some(60));
        assert!(
            parse(&json!({"format": "auto"}))
                .unwrap()
                .params
                .format_auto
        );
        assert_eq!(parse(&json!({})).unwrap(), PresetParams::default());
    }

    #[test]
    fn animation_keys_and_gif_output() {
        let p = parse(&json!({"frame": 2, "animated": false, "format": "gif"})).unwrap();
        assert_eq!(
            (p.params.frame, p.params.animated, p.output),
            (Some(2), Some(false), Some(OutputFormat::Gif))
        );
    }

    #[test]
    fn null_unsets_a_key_and_jxl_is_an_output() {
        let p = parse(&json!({"w": 300, "h": null, "format": "jxl"})).unwrap();
        assert_eq!(
            (p.params.w, p.params.h, p.output),
            (Some(300), None, Some(OutputFormat::Jxl))
        );
        assert!(!p.params.format_auto);
        let jpeg = parse(&json!({"format": "JPG", "q": null})).unwrap();
        assert_eq!(jpeg.output, Some(OutputFormat::Jpeg));
        assert_eq!(
            jpeg.params.format, None,
            "the format is the preset's output, not a param"
        );
    }

    #[test]
    fn bad_presets_name_the_key() {
        for (bad, key) in [
            (json!({"w": 0}), "params.w"),
            (json!({"width": 10}), "params.width"),
            (json!({"p:other": ""}), "params.p:other"),
            (json!({"sig": "x"}), "params.sig"),
            (json!({"format": "bmp"}), "params.format"),
            (json!({"frame": -1}), "params.frame"),
            (json!({"fit": ["cover"]}), "params.fit"),
            (json!({"bg": "zz"}), "params.bg"),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(e.starts_with(key), "{bad}: {e}");
        }
        assert!(parse(&json!([1])).is_err());
    }
}
