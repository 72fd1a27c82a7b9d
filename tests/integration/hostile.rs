//! The hostile-input corpus (`tests/fixtures/hostile/`, made by its `generate.py`) over HTTP
//! against the real binary: every file uploaded and delivered, each answer a clear 4xx with
//! the JSON error body (or, for the files that are odd but valid, a correct render), the
//! node's resident memory flat across the whole corpus (bounded by the per-job budget), and
//! the node healthy afterwards.

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{ChildNode, child_config, cli_create_account, decode, fixture};
use imgnode::pipeline::SourceFormat;
use imgnode::store::{NewImage, Store, Visibility};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Upload and delivery answer 4xx with the JSON error body.
    Refused,
    /// Odd but valid: stored, and renders at the right size.
    Renders,
}

use Want::{Refused, Renders};

/// Every file of the corpus and what it must get (`generate.py`'s files and the older ones
/// from `../generate.sh`).
const CORPUS: &[(&str, Want)] = &[
    ("bad_exif_offset.jpg", Renders),
    // Bit flips inside a lossy payload decode to wrong pixels, as in a browser.
    ("bitflip_avif.avif", Renders),
    ("bitflip_gif.gif", Refused),
    ("bitflip_jpeg.jpg", Refused),
    ("bitflip_png.png", Refused),
    ("bitflip_progressive.jpg", Refused),
    ("bitflip_webp.webp", Renders),
    ("bitflip_webp_lossless.webp", Refused),
    ("bomb_avif_ispe.avif", Refused),
    ("bomb_exr_100k.exr", Refused),
    // The second part is never decoded, but its data window counts.
    ("bomb_exr_part2.exr", Refused),
    ("bomb_gif_screen.gif", Refused),
    ("bomb_heic_grid.heic", Refused),
    ("bomb_heic_ispe.heic", Refused),
    ("bomb_ico_png_100k.ico", Refused),
    ("bomb_hdr_100k.hdr", Refused),
    ("bomb_jpeg_65k.jpg", Refused),
    ("bomb_jxl_100k.jxl", Refused),
    ("bomb_png_100k.png", Refused),
    ("bomb_png_zlib.png", Refused),
    ("bomb_pnm_100k.ppm", Refused),
    ("bomb_qoi_100k.qoi", Refused),
    ("bomb_tga_65k.tga", Refused),
    ("bomb_tiff_100k.tif", Refused),
    ("bomb_tiff_page2.tif", Refused),
    ("bomb_webp_canvas.webp", Refused),
    ("cmyk_no_profile.jpg", Renders),
    ("empty.bin", Refused),
    ("exif_65535_entries.jpg", Renders),
    ("exif_offset_past_end.jpg", Renders),
    ("exif_two_blocks.jpg", Renders),
    ("garbage.jpg", Refused),
    ("gif_3000_frames.gif", Refused),
    ("gif_animation_480mp.gif", Refused),
    ("heic_sps_bigger.heic", Refused),
    ("gif_frame_bigger_than_screen.gif", Refused),
    ("huge_dims.png", Refused),
    ("jxl_1002_frames.jxl", Refused),
    ("ico_size_mismatch.ico", Refused),
    ("one_byte.png", Refused),
    ("png16_gamma_tiny.png", Renders),
    ("png16_gamma_zero.png", Renders),
    ("png_5000_chunks.png", Renders),
    ("png_chunk_2gib.png", Refused),
    ("polyglot_gif_zip.gif", Renders),
    ("polyglot_jpeg_html.jpg", Renders),
    ("polyglot_pdf_png.png", Refused),
    ("svg_billion_laughs.svg", Refused),
    ("svg_dash_bomb.svg", Refused),
    ("svg_deep_nesting.svg", Refused),
    // Hrefs to /etc/passwd and to 127.0.0.1: rendered without them (nothing read or fetched).
    ("svg_external_href.svg", Renders),
    ("svg_huge_filter.svg", Refused),
    ("svg_huge_size.svg", Refused),
    ("svg_many_nodes.svg", Refused),
    ("svg_marker_bomb.svg", Refused),
    ("svg_overdraw.svg", Refused),
    ("svg_pattern_tile.svg", Refused),
    ("svg_script.svg", Renders),
    ("svg_use_bomb.svg", Refused),
    ("text_as.webp", Refused),
    ("tiff_jpeg_strip_bigger.tif", Refused),
    ("truncated.avif", Refused),
    ("truncated.jpg", Refused),
    ("truncated_heic.heic", Refused),
    ("truncated.png", Refused),
    ("truncated_avif.avif", Refused),
    ("truncated_exr.exr", Refused),
    ("truncated_gif.gif", Refused),
    ("truncated_hdr.hdr", Refused),
    ("truncated_ico.ico", Refused),
    ("truncated_jpeg.jpg", Refused),
    ("truncated_jxl.jxl", Refused),
    ("truncated_png.png", Refused),
    ("truncated_pnm.ppm", Refused),
    ("truncated_progressive.jpg", Refused),
    ("truncated_qoi.qoi", Refused),
    ("truncated_svg.svg", Refused),
    ("truncated_tga.tga", Refused),
    ("truncated_tiff.tif", Refused),
    ("truncated_webp.webp", Refused),
    ("truncated_webp_lossless.webp", Refused),
    ("two_bytes.jpg", Refused),
    // Found by fuzzing: a VP8 frame far larger than its canvas.
    ("webp_frame_bigger_than_canvas.webp", Refused),
    ("webp_frame_bigger_overstated.webp", Refused),
    ("webp_frame_bigger_second.webp", Refused),
    ("wrong_magic.bin", Refused),
    ("zero.jpg", Refused),
];

/// The per-job decode budget the test node is configured with: 16 MP x 4 bytes.
const BUDGET: u64 = 16_000_000 * 4;

fn assert_json_4xx(what: &str, status: u16, content_type: &str, body: &[u8]) {
    assert!(
        (400..500).contains(&status),
        "{what}: {status} {}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(content_type, "application/json", "{what}");
    let v: Value = serde_json::from_slice(body).expect("JSON error body");
    assert!(v["error"]["code"].is_string(), "{what}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_file_gets_a_clear_answer_and_memory_stays_flat() {
    let listed: std::collections::BTreeSet<String> = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hostile"
    ))
    .unwrap()
    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
    .filter(|n| n != "generate.py")
    .collect();
    let covered: std::collections::BTreeSet<String> =
        CORPUS.iter().map(|(n, _)| (*n).to_string()).collect();
    assert_eq!(listed, covered, "every corpus file has an expectation");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (config, store_url) = child_config(
        dir.path(),
        "[cache]\nmemory = \"16MiB\"\ndisk = \"128MiB\"\n\
         [limits]\nmax_source_pixels = 16000000\n",
    )
    .await;
    let key = cli_create_account(&config, "acme");
    let node = ChildNode::spawn(&config).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let upload = |bytes: Vec<u8>, name: &str| {
        let form = Form::new()
            .part("file", Part::bytes(bytes).file_name(name.to_string()))
            .text("target_path", format!("up/{name}"));
        client
            .post(format!("{}/api/v1/images", node.base))
            .bearer_auth(&key)
            .multipart(form)
            .send()
    };
    let get = |target: String| client.get(format!("{}{target}", node.base)).send();

    // Warm up (allocator arenas, codec tables) with real work before the baseline.
    for photo in ["ladybird.jpg", "dune.jpg"] {
        let res = upload(fixture(&format!("photos/{photo}")), photo)
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        for ext in ["webp", "avif", "png"] {
            let res = get(format!(
                "/i/acme/up/{}.{ext}?w=300",
                &photo[..photo.len() - 4]
            ))
            .await
            .unwrap();
            assert_eq!(res.status(), 200);
        }
    }
    let before = node.peak_rss_bytes();

    // Originals stored as they are, bypassing the upload checks (bytes another node accepted
    // under other limits, or damaged at rest), for the delivery half.
    let store = Store::open(&store_url).await.unwrap();
    let origin = imgnode::origin::Origin::from_config(&imgnode::config::OriginConfig::Fs {
        path: data.join("originals"),
    })
    .unwrap();

    let mut mismatches = Vec::new();
    for (name, want) in CORPUS {
        let bytes = fixture(&format!("hostile/{name}"));
        let res = upload(bytes.clone(), name).await.unwrap();
        let status = res.status().as_u16();
        let ct = res.headers()["content-type"].to_str().unwrap().to_string();
        let body = res.bytes().await.unwrap();
        let ext = name.rsplit_once('.').map_or("bin", |(_, e)| e);
        let stem = &name[..name.len() - ext.len() - 1];
        let outcome = if status == 201 { Renders } else { Refused };
        if outcome != *want {
            mismatches.push(format!(
                "{name}: upload answered {status}, expected {want:?}"
            ));
            continue;
        }
        match want {
            Refused => assert_json_4xx(&format!("upload {name}"), status, &ct, &body),
            Renders => {
                assert_eq!(
                    status,
                    201,
                    "upload {name}: {}",
                    String::from_utf8_lossy(&body)
                );
                let up: Value = serde_json::from_slice(&body).unwrap();
                let width = up["dimensions"]["width"].as_u64().unwrap() as u32;
                let res = get(format!("/i/acme/up/{stem}.png?w=32&fit=scale-down"))
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200, "render {name}");
                let image = decode(&res.bytes().await.unwrap());
                // No enlargement: a source narrower than 32 px keeps its width.
                assert_eq!(image.width(), width.min(32), "render {name}");
            }
        }

        // Delivery of the same bytes stored raw.
        let declared = SourceFormat::from_name(ext).unwrap_or(SourceFormat::Jpeg);
        let hash = hex::encode(Sha256::digest(&bytes));
        origin
            .put_plaintext_legacy(&hash, Bytes::from(bytes.clone()))
            .await
            .unwrap();
        // Stems of their own (`truncated.jpg` and `truncated.png` must not share one): the
        // rows below are written behind the node's back, past its metadata cache.
        let raw_stem = format!("raw/{}", name.replace('.', "_"));
        let image = NewImage {
            account: "acme".into(),
            id: hash[..16].to_string(),
            hash,
            format: declared,
            width: 100,
            height: 100,
            size: bytes.len() as u64,
            original_filename: (*name).to_string(),
            visibility: Visibility::Public,
            dominant_color: None,
            has_alpha: None,
            frames: None,
        };
        let path = format!("{raw_stem}.{}", declared.extension());
        // Same bytes as an upload above: the path is new, the image row may exist.
        store
            .put_image(&image, &path, &raw_stem, Default::default())
            .await
            .unwrap();
        for target in [
            format!("/i/acme/{raw_stem}.webp?w=48"),
            format!("/i/acme/{raw_stem}.png"),
        ] {
            let res = get(target.clone()).await.unwrap();
            let status = res.status().as_u16();
            let ct = res.headers()["content-type"].to_str().unwrap().to_string();
            let nosniff = res
                .headers()
                .get("x-content-type-options")
                .is_some_and(|v| v == "nosniff");
            let body = res.bytes().await.unwrap();
            // A URL asking for the stored format untransformed gets the stored bytes as they
            // are (never decoded, so never a decoder's problem), with `nosniff` so no browser
            // takes a polyglot for anything but an image.
            let passthrough = declared == SourceFormat::Png && !target.contains('?');
            let ok = match want {
                Refused if passthrough => status == 200 && nosniff,
                Refused => (400..500).contains(&status),
                Renders => status == 200,
            };
            if !ok {
                mismatches.push(format!(
                    "deliver {target}: {status} {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ));
            } else if status != 200 {
                assert_json_4xx(&format!("deliver {target}"), status, &ct, &body);
            }
        }
    }
    store.close().await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    let after = node.peak_rss_bytes();
    eprintln!(
        "hostile corpus: peak RSS {} MiB before, {} MiB after ({} files, uploads and deliveries)",
        before >> 20,
        after >> 20,
        CORPUS.len()
    );
    assert!(
        after <= before + BUDGET,
        "peak RSS grew from {} MiB to {} MiB over the hostile corpus (budget {} MiB)",
        before >> 20,
        after >> 20,
        BUDGET >> 20
    );
    // Still healthy: a fresh render.
    let res = get("/i/acme/up/ladybird.jpg?w=123".into()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(decode(&res.bytes().await.unwrap()).width(), 123);
}

/// A GIF whose 1x1 logical screen carries a 5000x5000 frame of real pixel data (25 MP,
/// 100 MB as RGBA: within this node's 30 MP limit and its decoder's memory limit, so only the
/// frame-versus-screen check stands in its way): refused from its frame descriptor at upload
/// and at delivery, without the node's peak RSS moving. (The corpus test above meets the same
/// file over a 16 MP limit: `IMAGE_TOO_LARGE`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gif_frame_larger_than_its_screen_is_refused_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (config, store_url) = child_config(
        dir.path(),
        "[cache]\nmemory = \"16MiB\"\ndisk = \"128MiB\"\n\
         [limits]\nmax_source_pixels = 30000000\n",
    )
    .await;
    let key = cli_create_account(&config, "acme");
    let node = ChildNode::spawn(&config).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // Warm up with a real render before the baseline.
    let form = Form::new()
        .part(
            "file",
            Part::bytes(fixture("photos/ladybird.jpg")).file_name("ladybird.jpg"),
        )
        .text("target_path", "up/ladybird.jpg");
    let res = client
        .post(format!("{}/api/v1/images", node.base))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = client
        .get(format!("{}/i/acme/up/ladybird.webp?w=300", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let before = node.peak_rss_bytes();

    let bomb = fixture("hostile/gif_frame_bigger_than_screen.gif");
    let mut answers = Vec::new();
    let form = Form::new()
        .part("file", Part::bytes(bomb.clone()).file_name("bomb.gif"))
        .text("target_path", "up/bomb.gif");
    let res = client
        .post(format!("{}/api/v1/images", node.base))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    answers.push(("upload".to_string(), res));
    // The same bytes stored behind the node's back, as another node might have accepted them.
    let store = Store::open(&store_url).await.unwrap();
    let origin = imgnode::origin::Origin::from_config(&imgnode::config::OriginConfig::Fs {
        path: data.join("originals"),
    })
    .unwrap();
    let hash = hex::encode(Sha256::digest(&bomb));
    origin
        .put_plaintext_legacy(&hash, Bytes::from(bomb.clone()))
        .await
        .unwrap();
    let image = NewImage {
        account: "acme".into(),
        id: hash[..16].to_string(),
        hash,
        format: SourceFormat::Gif,
        width: 1,
        height: 1,
        size: bomb.len() as u64,
        original_filename: "raw.gif".into(),
        visibility: Visibility::Public,
        dominant_color: None,
        has_alpha: None,
        frames: None,
    };
    store
        .put_image(&image, "raw/bomb.gif", "raw/bomb", Default::default())
        .await
        .unwrap();
    store.close().await;
    for target in ["/i/acme/raw/bomb.png", "/i/acme/raw/bomb.webp?w=48"] {
        let res = client
            .get(format!("{}{target}", node.base))
            .send()
            .await
            .unwrap();
        answers.push((target.to_string(), res));
    }
    let mut seen = Vec::new();
    for (what, res) in answers {
        let status = res.status().as_u16();
        let ct = res.headers()["content-type"].to_str().unwrap().to_string();
        seen.push((what, status, ct, res.bytes().await.unwrap()));
    }

    let after = node.peak_rss_bytes();
    assert!(
        after <= before + (32 << 20),
        "peak RSS grew from {} MiB to {} MiB on a 12 KB GIF",
        before >> 20,
        after >> 20
    );
    for (what, status, ct, body) in seen {
        assert_json_4xx(&what, status, &ct, &body);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "CORRUPT_IMAGE", "{what}: {v}");
    }
}

/// Animations over `limits.max_animation_pixels` (frames x canvas, from the headers) or over
/// `limits.max_frames` are a 422 naming the limit, at upload and for an original stored
/// behind the node's back. The 480 MP one has no pixel data to speak of (one pixel's LZW per
/// frame): decoding it would be CORRUPT_IMAGE, so IMAGE_TOO_LARGE is the header check.
#[tokio::test]
async fn animations_over_the_pixel_budget_or_the_frame_limit_are_422() {
    use crate::harness::{TestNode, assert_json_error};
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    for (name, limit) in [
        ("gif_animation_480mp.gif", "limits.max_animation_pixels"),
        ("gif_3000_frames.gif", "frames, limit 1000"),
    ] {
        let bytes = fixture(&format!("hostile/{name}"));
        let (status, body) = node.upload(&key, bytes.clone(), name).await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["error"]["code"], "IMAGE_TOO_LARGE", "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(limit), "{name}: {message}");

        let stem = &name[..name.len() - 4];
        node.add_raw("acme", stem, SourceFormat::Gif, &bytes).await;
        for ext in ["webp?w=10", "gif?w=10", "png?w=10"] {
            let (status, headers, body) = node.fetch(&format!("/i/acme/{stem}.{ext}")).await;
            assert_json_error(status, &headers, &body, 422, "IMAGE_TOO_LARGE");
            assert!(
                String::from_utf8_lossy(&body).contains(limit),
                "{name} {ext}"
            );
        }
    }
    // The budget is the operator's: 3 frames of 120x80 (28 800 px) over a 20 000 px budget.
    let node = TestNode::start_with("[limits]\nmax_animation_pixels = 20000\n").await;
    let key = node.account_key("acme", "read,write").await;
    let (status, body) = node
        .upload(&key, fixture("formats/gif_anim_photo.gif"), "a.gif")
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_animation_pixels"),
        "{body}"
    );
}
