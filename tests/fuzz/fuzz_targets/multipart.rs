//! The upload form parser (multipart/form-data, streamed): any body, cut into chunks at any
//! place, gives a form or a clear error within the size limit; never a panic.
#![no_main]

use bytes::Bytes;
use imgnode::api::images::read_upload_form;
use libfuzzer_sys::fuzz_target;

const MAX: u64 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // First byte: where the body is cut in two (chunk boundaries are where parsers slip).
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(body.len());
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::copy_from_slice(&body[..cut])),
        Ok(Bytes::copy_from_slice(&body[cut..])),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let parsed = runtime.block_on(read_upload_form(
        futures_util::stream::iter(chunks),
        Some("multipart/form-data; boundary=XyZ"),
        Some(body.len() as u64),
        MAX,
    ));
    if let Ok(form) = parsed
        && let Some((_, bytes)) = form.file
    {
        assert!(bytes.len() as u64 <= MAX);
    }
});
