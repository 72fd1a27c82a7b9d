//! Signature verification: any `sig`/`exp` for any URL is refused unless it is the real
//! signature; the real one always verifies; never a panic.
#![no_main]

use imgnode::delivery::url::DeliveryUrl;
use imgnode::signing::SigningKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys = SigningKeys::from_keys([b"fuzz-key-one".to_vec(), b"fuzz-key-two".to_vec()]);
    // `URL|sig|exp`, each part optional.
    let mut parts = text.splitn(3, '|');
    let url = parts.next().unwrap_or("");
    let sig = parts.next();
    let exp = parts.next().and_then(|e| e.parse::<i64>().ok());
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let Ok(parsed) = DeliveryUrl::parse(path, query) else {
        return;
    };
    let message = parsed.signing_message();
    let now = 1_000_000;
    let real = keys.sign(&message);
    if let Some(sig) = sig
        && sig != real
    {
        assert!(keys.verify(&message, Some(sig), exp, now).is_err(), "forged signature accepted");
    }
    assert!(keys.verify(&message, Some(&real), None, now).is_ok());
    assert!(keys.verify(&message, None, None, now).is_err());
});
