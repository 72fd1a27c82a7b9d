//! Delivery URL parsing: never panics, and a parsed URL's resolved transform survives the
//! round trip through its canonical form (the cache key) unchanged.
#![no_main]

use imgnode::delivery::url::{DeliveryUrl, TransformDefaults, canonical, parse_canonical};
use imgnode::pipeline::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = text.split_once('?').unwrap_or((text, ""));
    let Ok(url) = DeliveryUrl::parse(path, query) else {
        return;
    };
    let _ = url.signing_message();
    let transform = url
        .query
        .params
        .resolve(&TransformDefaults::default(), &Limits::default());
    let text = canonical(&transform);
    let back = parse_canonical(&text).expect("a canonical form parses back");
    assert_eq!(back, transform, "canonical form {text:?} does not round-trip");
});
