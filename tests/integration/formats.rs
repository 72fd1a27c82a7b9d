//! Every input format, EXIF orientation and colour conversion, checked on the pixels of real
//! HTTP responses (decoded with the independent `image` crate).

use imgnode::store::Visibility;

use crate::harness::{TestNode, decode, fixture};

/// The `formats/` fixtures are 64x48 quadrants: red, green / blue, white (or transparent).
const FORMATS: &[&str] = &[
    "jpeg_baseline.jpg",
    "jpeg_progressive.jpg",
    "jpeg_restart.jpg",
    "jpeg_444.jpg",
    "png_palette.png",
    "png_16bit.png",
    "png_rgba.png",
    "png_interlaced.png",
    "webp_lossy.webp",
    "webp_lossless.webp",
    "webp_alpha.webp",
    "webp_animated.webp",
    "gif_animated.gif",
    "avif_444.avif",
    "avif_420_limited.avif",
    "avif_10bit.avif",
    "avif_12bit_422.avif",
    "avif_lossless.avif",
    "avif_alpha.avif",
    "bmp_rgb24.bmp",
];

/// Asserts that pixel (x, y) is within `tolerance` of `want` on every channel.
fn assert_pixel(
    img: &image::RgbImage,
    (x, y): (u32, u32),
    want: [u8; 3],
    tolerance: u8,
    what: &str,
) {
    let p = img.get_pixel(x, y).0;
    assert!(
        close(p, want, tolerance),
        "{what}: pixel ({x},{y}) is {p:?}, expected about {want:?}"
    );
}

fn close(p: [u8; 3], want: [u8; 3], tolerance: u8) -> bool {
    p.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= tolerance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_format_renders_with_the_right_colours() {
    let node = TestNode::start().await;
    for (i, name) in FORMATS.iter().enumerate() {
        let stem = format!("f{i}");
        let ext = name.rsplit('.').next().unwrap();
        node.add_image(
            "acme",
            &format!("{stem}.{ext}"),
            &fixture(&format!("formats/{name}")),
            Visibility::Public,
        )
        .await;
        // PNG output at the source size keeps alpha and adds no compression error.
        let (status, headers, body) = node.fetch(&format!("/i/acme/{stem}.png?w=64")).await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
        assert_eq!(headers["content-type"], "image/png");
        let img = decode(&body).to_rgba8();
        assert_eq!(img.dimensions(), (64, 48), "{name}");
        let px = |x, y| {
            let p = img.get_pixel(x, y).0;
            ([p[0], p[1], p[2]], p[3])
        };
        let tol = 40;
        assert!(
            close(px(12, 10).0, [255, 0, 0], tol),
            "{name} red: {:?}",
            px(12, 10)
        );
        assert!(
            close(px(52, 10).0, [0, 255, 0], tol),
            "{name} green: {:?}",
            px(52, 10)
        );
        assert!(
            close(px(12, 38).0, [0, 0, 255], tol),
            "{name} blue: {:?}",
            px(12, 38)
        );
        let (corner, alpha) = px(52, 38);
        let transparent =
            name.contains("rgba") || name.contains("alpha") || name.starts_with("gif");
        if transparent {
            assert_eq!(alpha, 0, "{name}: bottom-right should be transparent");
        } else {
            assert!(
                close(corner, [255, 255, 255], tol),
                "{name} white: {corner:?}"
            );
            assert_eq!(alpha, 255, "{name}");
        }
    }
}

/// QOI, PNM, TGA, ICO/CUR and TIFF uploaded through the API, sniffed from the bytes (the upload's
/// file name says `.bin`), reported with their format, media type and size, and rendered to a
/// WebP of a given width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qoi_pnm_tga_ico_and_tiff_upload_and_render_to_webp() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let media_types = [
        ("qoi", "image/qoi"),
        ("pnm", "image/x-portable-anymap"),
        ("tga", "image/x-tga"),
        ("ico", "image/vnd.microsoft.icon"),
        ("tiff", "image/tiff"),
    ];
    // (fixture, reported format, source size, output width, output height)
    let cases = [
        ("qoi_photo.qoi", "qoi", (96, 60), 48, 30),
        ("qoi_alpha.qoi", "qoi", (64, 48), 32, 24),
        ("pnm_photo.ppm", "pnm", (96, 60), 48, 30),
        ("pnm_bitmap.pbm", "pnm", (96, 60), 48, 30),
        ("pnm_alpha.pam", "pnm", (64, 48), 32, 24),
        ("tga_photo.tga", "tga", (96, 60), 48, 30),
        ("tga_rle_alpha.tga", "tga", (64, 48), 32, 24),
        ("ico_photo.ico", "ico", (96, 60), 48, 30),
        ("ico_png.ico", "ico", (256, 256), 64, 64),
        ("cur_alpha.cur", "ico", (64, 48), 32, 24),
        ("tiff_deflate_tiles.tif", "tiff", (96, 60), 48, 30),
        ("tiff_jpeg.tif", "tiff", (96, 60), 48, 30),
        ("tiff_cmyk.tif", "tiff", (96, 60), 48, 30),
        ("tiff_multipage.tif", "tiff", (96, 60), 48, 30),
    ];
    for (i, (name, format, (w, h), out_w, out_h)) in cases.into_iter().enumerate() {
        let mime = media_types.iter().find(|(f, _)| *f == format).unwrap().1;
        let (status, body) = node
            .upload(
                &key,
                fixture(&format!("formats/{name}")),
                &format!("new/n{i}.bin"),
            )
            .await;
        assert_eq!(status, 201, "{name}: {body}");
        assert_eq!(body["format"], format, "{name}");
        assert_eq!(body["dimensions"]["width"], w, "{name}");
        assert_eq!(body["dimensions"]["height"], h, "{name}");
        let id = body["id"].as_str().unwrap();
        let (status, _, meta) = node
            .api(
                reqwest::Method::GET,
                &format!("/api/v1/images/{id}"),
                &key,
                None,
            )
            .await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(meta["metadata"]["mime_type"], mime, "{name}");
        let stored = body["paths"][0].as_str().unwrap().to_string();
        let stem = stored.rsplit_once('.').map_or(stored.as_str(), |(s, _)| s);
        let (status, headers, webp) = node.fetch(&format!("/i/acme/{stem}.webp?w={out_w}")).await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&webp));
        assert_eq!(headers["content-type"], "image/webp", "{name}");
        assert_eq!(
            decode(&webp).to_rgba8().dimensions(),
            (out_w, out_h),
            "{name}"
        );
    }
}

#[tokio::test]
async fn gray_and_cmyk_jpegs_come_out_as_rgb() {
    let node = TestNode::start().await;
    node.add_image(
        "acme",
        "gray.jpg",
        &fixture("formats/jpeg_gray.jpg"),
        Visibility::Public,
    )
    .await;
    node.add_image(
        "acme",
        "cmyk.jpg",
        &fixture("formats/jpeg_cmyk.jpg"),
        Visibility::Public,
    )
    .await;
    node.add_image(
        "acme",
        "ycck.jpg",
        &fixture("formats/jpeg_ycck.jpg"),
        Visibility::Public,
    )
    .await;
    let gray = decode(&node.fetch("/i/acme/gray.png").await.2).to_rgb8();
    let p = gray.get_pixel(12, 10).0;
    assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
    // CMYK without a profile: cyan, magenta / yellow, black.
    for stem in ["cmyk", "ycck"] {
        let img = decode(&node.fetch(&format!("/i/acme/{stem}.png")).await.2).to_rgb8();
        assert_pixel(&img, (12, 10), [0, 255, 255], 40, &format!("{stem} cyan"));
        assert_pixel(
            &img,
            (52, 10),
            [255, 0, 255],
            40,
            &format!("{stem} magenta"),
        );
        assert_pixel(&img, (12, 38), [255, 255, 0], 40, &format!("{stem} yellow"));
        assert_pixel(&img, (52, 38), [0, 0, 0], 40, &format!("{stem} black"));
    }
}

#[tokio::test]
async fn a_cmyk_jpeg_with_a_profile_uses_the_profile() {
    let node = TestNode::start().await;
    node.add_image(
        "acme",
        "print.jpg",
        &fixture("color/cmyk_profile.jpg"),
        Visibility::Public,
    )
    .await;
    let img = decode(&node.fetch("/i/acme/print.png").await.2).to_rgb8();
    // toy-cmyk.icc maps 100 % cyan to about (0,160,225), not the naive (0,255,255).
    let cyan = img.get_pixel(8, 8).0;
    assert!(close(cyan, [0, 160, 225], 25), "{cyan:?}");
    let magenta = img.get_pixel(24, 8).0;
    assert!(close(magenta, [230, 0, 126], 25), "{magenta:?}");
}

#[tokio::test]
async fn display_p3_sources_are_converted_to_srgb() {
    let node = TestNode::start().await;
    for (stem, file) in [
        ("p3", "color/p3_jpeg.jpg"),
        ("p3png", "color/p3_alpha.png"),
        ("p3avif", "color/p3_nclx.avif"),
        ("srgb", "color/srgb_tagged.jpg"),
        // JPEG XL: the ICC profile kept as a profile (JPEG recompression, lossless), and as an
        // enumerated encoding (cjxl turns it into one for lossy XYB).
        ("p3jxl", "color/p3_jpeg.jxl"),
        ("p3jxlll", "color/p3_lossless.jxl"),
        ("p3jxllossy", "color/p3_lossy.jxl"),
    ] {
        let ext = file.rsplit('.').next().unwrap();
        node.add_image(
            "acme",
            &format!("{stem}.{ext}"),
            &fixture(file),
            Visibility::Public,
        )
        .await;
    }
    // P3 (200,60,50) is sRGB (217.5, 41.6, 38.8): more red, less green than the raw values.
    for stem in ["p3", "p3avif", "p3jxl", "p3jxlll", "p3jxllossy"] {
        let img = decode(&node.fetch(&format!("/i/acme/{stem}.png")).await.2).to_rgb8();
        let p = img.get_pixel(16, 16).0;
        assert!(close(p, [218, 42, 39], 8), "{stem}: {p:?}");
    }
    // Same extension without parameters would be the untouched original (with its iCCP).
    let img = decode(&node.fetch("/i/acme/p3png.png?w=32").await.2).to_rgba8();
    let p = img.get_pixel(16, 16).0;
    assert!(close([p[0], p[1], p[2]], [218, 42, 39], 8), "{p:?}");
    assert!(p[3].abs_diff(128) <= 1, "alpha kept: {p:?}");
    // An sRGB-tagged source is left alone.
    let img = decode(&node.fetch("/i/acme/srgb.png").await.2).to_rgb8();
    let p = img.get_pixel(16, 16).0;
    assert!(close(p, [200, 60, 50], 6), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_eight_exif_orientations_come_out_upright() {
    let node = TestNode::start().await;
    let mut cases: Vec<(String, String)> = (1..=8)
        .map(|n| (format!("o{n}"), format!("orientation/orient_{n}.jpg")))
        .collect();
    for extra in [
        "orient_6.png",
        "orient_6.webp",
        "orient_irot1.avif",
        "orient_imir1.avif",
        "orient_irot3_imir0.avif",
    ] {
        let stem = extra.replace('.', "_");
        cases.push((stem, format!("orientation/{extra}")));
    }
    for (stem, file) in &cases {
        let ext = file.rsplit('.').next().unwrap();
        node.add_image(
            "acme",
            &format!("{stem}.{ext}"),
            &fixture(file),
            Visibility::Public,
        )
        .await;
        // Displayed: 48x32, white, red block top-left, blue block top-right.
        let (status, _, body) = node.fetch(&format!("/i/acme/{stem}.png?w=48")).await;
        assert_eq!(status, 200, "{file}");
        let img = decode(&body).to_rgb8();
        assert_eq!(img.dimensions(), (48, 32), "{file}");
        assert_pixel(&img, (4, 4), [255, 0, 0], 60, &format!("{file}: top-left"));
        assert_pixel(
            &img,
            (43, 4),
            [0, 0, 255],
            60,
            &format!("{file}: top-right"),
        );
        assert_pixel(
            &img,
            (24, 26),
            [255, 255, 255],
            60,
            &format!("{file}: bottom"),
        );
        assert_pixel(
            &img,
            (4, 28),
            [255, 255, 255],
            60,
            &format!("{file}: bottom-left"),
        );
    }
    // Dimensions recorded at import are the displayed ones.
    let rec = node
        .app
        .state
        .store
        .image_by_stem("acme", "o6")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rec.width, rec.height), (48, 32));
}

#[tokio::test]
async fn outputs_carry_no_exif_from_a_tagged_source() {
    let node = TestNode::start().await;
    // orient_6.jpg carries an EXIF block; the rendered output must not.
    node.add_image(
        "acme",
        "tagged.jpg",
        &fixture("orientation/orient_6.jpg"),
        Visibility::Public,
    )
    .await;
    for ext in ["jpg", "png", "webp", "avif"] {
        let body = node.fetch(&format!("/i/acme/tagged.{ext}?w=40")).await.2;
        assert!(
            !body
                .windows(4)
                .any(|w| w == b"Exif" || w == b"eXIf" || w == b"EXIF"),
            "{ext} output carries EXIF"
        );
    }
}

#[tokio::test]
async fn hostile_originals_are_refused_at_import() {
    let node = TestNode::start().await;
    let state = &node.app.state;
    state.store.create_account("acme", "free").await.unwrap();
    for file in [
        "hostile/empty.bin",
        "hostile/wrong_magic.bin",
        "hostile/huge_dims.png",
        "hostile/garbage.jpg",
        "formats/avif_grid.avif",
    ] {
        let r = state
            .ingest()
            .add(imgnode::ingest::Original {
                account: "acme".into(),
                path: "x.jpg".into(),
                original_filename: "x.jpg".into(),
                bytes: fixture(file).into(),
                visibility: Visibility::Public,
                placement: Default::default(),
            })
            .await;
        assert!(r.is_err(), "{file} was accepted");
    }
    assert!(
        state
            .store
            .image_by_stem("acme", "x")
            .await
            .unwrap()
            .is_none()
    );
}

/// Decodes a JPEG XL answer with `djxl` (Debian's libjxl-tools, installed by tests/setup.sh):
/// an independent decoder, not the node's code. Its PNG is read with the `image` crate.
fn djxl(jxl: &[u8]) -> image::DynamicImage {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.jxl"), dir.path().join("out.png"));
    std::fs::write(&input, jxl).unwrap();
    let run = std::process::Command::new("djxl")
        .arg(&input)
        .arg(&output)
        .output()
        .expect("djxl runs (libjxl-tools: bash tests/setup.sh)");
    assert!(
        run.status.success(),
        "djxl: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    decode(&std::fs::read(&output).unwrap())
}

fn mean_abs_error(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x.abs_diff(y)))
        .sum::<f64>()
        / a.len() as f64
}

/// The `.jxl` URL the upload answer hands out is served as `image/jxl`; djxl decodes it to the
/// requested size, close to the PNG of the same transform, and lower `q` gives fewer bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jxl_urls_from_the_api_answer_image_jxl_that_djxl_decodes() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let (status, body) = node
        .upload(&key, fixture("photos/dune.jpg"), "pics/dune.jpg")
        .await;
    assert_eq!(status, 201, "{body}");
    let (w, h) = (
        body["dimensions"]["width"].as_u64().unwrap() as u32,
        body["dimensions"]["height"].as_u64().unwrap() as u32,
    );
    let jxl_url = body["available_formats"]["jxl"].as_str().unwrap();
    let path = jxl_url
        .strip_prefix(&node.base)
        .unwrap_or_else(|| panic!("{jxl_url} is on {}", node.base));
    assert!(path.ends_with("/pics/dune.jxl"), "{path}");
    let id = body["id"].as_str().unwrap();
    let (status, _, meta) = node
        .api(
            reqwest::Method::GET,
            &format!("/api/v1/images/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(meta["urls"]["jxl"], jxl_url);

    // The URL as handed out: full size (unsigned outputs stay under the pixel budget).
    let (status, headers, full) = node.fetch(path).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&full));
    assert_eq!(headers["content-type"], "image/jxl");
    assert_eq!(&full[..2], &[0xFF, 0x0A], "a bare codestream");
    assert_eq!(djxl(&full).to_rgb8().dimensions(), (w, h));

    // Resized: the same pixels as the PNG of the same transform, within lossy error.
    let (status, headers, small) = node.fetch("/i/acme/pics/dune.jxl?w=320&q=80").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jxl");
    let ours = djxl(&small).to_rgb8();
    let (_, _, png) = node.fetch("/i/acme/pics/dune.png?w=320").await;
    let reference = decode(&png).to_rgb8();
    assert_eq!(ours.dimensions(), reference.dimensions());
    assert_eq!(ours.width(), 320);
    let err = mean_abs_error(ours.as_raw(), reference.as_raw());
    let (_, _, jpg) = node.fetch("/i/acme/pics/dune.jpg?w=320&q=80").await;
    let jpg_err = mean_abs_error(decode(&jpg).to_rgb8().as_raw(), reference.as_raw());
    // Measured: JXL 11 541 bytes, mean error 5.77; JPEG at q=80 14 289 bytes, 5.83.
    assert!(err < 8.0, "mean error {err} at q=80");
    assert!(
        small.len() < jpg.len() && err <= jpg_err * 1.05,
        "JXL {} bytes, error {err}; JPEG {} bytes, error {jpg_err}",
        small.len(),
        jpg.len()
    );
    // The colours are right (sRGB signalled and decoded as such): no channel is shifted.
    let pixels = f64::from(ours.width() * ours.height());
    for c in 0..3 {
        let bias = ours
            .pixels()
            .zip(reference.pixels())
            .map(|(a, b)| f64::from(a.0[c]) - f64::from(b.0[c]))
            .sum::<f64>()
            / pixels;
        assert!(bias.abs() < 1.0, "channel {c} shifted by {bias}");
    }
    let (_, _, lower) = node.fetch("/i/acme/pics/dune.jxl?w=320&q=40").await;
    assert!(
        lower.len() < small.len(),
        "q=40 {} >= q=80 {}",
        lower.len(),
        small.len()
    );
    let err_lower = mean_abs_error(djxl(&lower).to_rgb8().as_raw(), reference.as_raw());
    assert!(
        err_lower > err,
        "q=40 error {err_lower} <= q=80 error {err}"
    );
}

/// `q=100` is lossless: djxl gives back exactly the pixels of the PNG of the same transform,
/// alpha included (unsigned URLs are capped at q=90 by default, so the cap is lifted here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jxl_at_q100_is_lossless_and_keeps_alpha() {
    let node = TestNode::start_with("[delivery]\nunsigned_max_quality = 100\n").await;
    node.add_image(
        "acme",
        "alpha.png",
        &fixture("formats/png_rgba.png"),
        Visibility::Public,
    )
    .await;
    node.add_image(
        "acme",
        "photo.jpg",
        &fixture("photos/ladybird.jpg"),
        Visibility::Public,
    )
    .await;
    for (stem, query) in [("alpha", "w=64"), ("photo", "w=300")] {
        let (status, headers, jxl) = node
            .fetch(&format!("/i/acme/{stem}.jxl?{query}&q=100"))
            .await;
        assert_eq!(status, 200, "{stem}");
        assert_eq!(headers["content-type"], "image/jxl");
        let (_, _, png) = node.fetch(&format!("/i/acme/{stem}.png?{query}")).await;
        let want = decode(&png).to_rgba8();
        let got = djxl(&jxl).to_rgba8();
        assert_eq!(got.dimensions(), want.dimensions(), "{stem}");
        assert!(
            got.as_raw() == want.as_raw(),
            "{stem}: q=100 is not lossless"
        );
        if stem == "alpha" {
            assert_eq!(got.get_pixel(52, 38).0[3], 0, "transparent corner kept");
            assert_eq!(got.get_pixel(12, 10).0[3], 255);
        }
    }
}

/// `format=auto` answers JPEG XL only to a client that lists `image/jxl` and only when the
/// account's `delivery_formats` lists `jxl` (the default list does not); `Vary: Accept`.
#[tokio::test]
async fn format_auto_offers_jxl_only_when_the_client_and_the_account_list_it() {
    let node = TestNode::start_with("[delivery]\navif_background = false\n").await;
    let key = node.account_key("acme", "read,write").await;
    node.add_image(
        "acme",
        "photo.jpg",
        &fixture("photos/ladybird.jpg"),
        Visibility::Public,
    )
    .await;
    let get = |accept: &'static str, w: u32| {
        let node = &node;
        async move {
            let res = node
                .get_with(
                    &format!("/i/acme/photo.jpg?w={w}&format=auto"),
                    &[("accept", accept)],
                )
                .await;
            assert_eq!(res.status(), 200, "{accept}");
            assert_eq!(res.headers()["vary"], "Accept", "{accept}");
            let media = res.headers()["content-type"].to_str().unwrap().to_string();
            (media, res.bytes().await.unwrap())
        }
    };
    let jxl_and_webp = "image/jxl,image/webp,*/*;q=0.8";
    // Default delivery_formats (avif, webp, jpeg, png): no JPEG XL for anyone.
    assert_eq!(get(jxl_and_webp, 200).await.0, "image/webp");
    assert_eq!(get("image/jxl,*/*", 200).await.0, "image/jpeg");

    let body = serde_json::json!({"delivery_formats": ["jxl", "avif", "webp", "jpeg"]});
    let (status, _, _) = node
        .api(reqwest::Method::PUT, "/api/v1/settings", &key, Some(body))
        .await;
    assert_eq!(status, 200);
    let (media, bytes) = get(jxl_and_webp, 210).await;
    assert_eq!(media, "image/jxl");
    assert_eq!(djxl(&bytes).to_rgb8().width(), 210);
    // Listed by the account, not by the client.
    assert_eq!(get("image/avif,image/webp,*/*", 210).await.0, "image/avif");
    assert_eq!(get("image/jxl;q=0,image/webp", 210).await.0, "image/webp");
    assert_eq!(get("*/*", 210).await.0, "image/jpeg");
}

/// `limits.jxl_max_pixels` downscales a JPEG XL output (shape kept) before libjxl sees it;
/// other formats of the same URL keep the requested size.
#[tokio::test]
async fn jxl_outputs_over_jxl_max_pixels_are_downscaled() {
    let node = TestNode::start_with("[limits]\njxl_max_pixels = 20000\n").await;
    node.add_image(
        "acme",
        "photo.jpg",
        &fixture("photos/ladybird.jpg"),
        Visibility::Public,
    )
    .await;
    let (status, headers, jxl) = node.fetch("/i/acme/photo.jxl?w=400").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/jxl");
    let (w, h) = djxl(&jxl).to_rgb8().dimensions();
    let (_, _, png) = node.fetch("/i/acme/photo.png?w=400").await;
    let (pw, ph) = decode(&png).to_rgb8().dimensions();
    assert_eq!(pw, 400);
    assert!(u64::from(w) * u64::from(h) <= 20_000, "{w}x{h}");
    assert!(w >= 170, "{w}x{h}: not the largest size within the cap");
    let (ratio, want) = (f64::from(w) / f64::from(h), f64::from(pw) / f64::from(ph));
    assert!((ratio - want).abs() < 0.02, "{w}x{h} against {pw}x{ph}");
}

/// JPEG XL, Radiance HDR and OpenEXR uploaded through the API (sniffed: the file name says
/// `.bin`), reported with their format and size, then delivered as PNG at the source width and
/// compared with the independent decode next to the fixture (`ref_*.png`: djxl for JPEG XL,
/// ImageMagick or a numpy implementation of the documented tone map for HDR and EXR), and as
/// WebP at half the width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jxl_hdr_and_exr_upload_and_render_like_an_independent_decoder() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    // (fixture, reported format, media type, size, tolerance against the reference)
    let cases = [
        ("jxl_lossy.jxl", "jxl", "image/jxl", (96, 60), 3),
        // (jxl_lossless_alpha.jxl is 63 bytes, under the upload minimum; the animation and the
        // EXR carry alpha here.)
        ("jxl_gray.jxl", "jxl", "image/jxl", (96, 60), 1),
        ("jxl_from_jpeg.jxl", "jxl", "image/jxl", (96, 60), 3),
        ("jxl_16bit.jxl", "jxl", "image/jxl", (96, 60), 1),
        // Stored turned a quarter with orientation 6: delivered upright, turned exactly once.
        ("jxl_orient6.jxl", "jxl", "image/jxl", (96, 60), 3),
        ("jxl_animated.jxl", "jxl", "image/jxl", (96, 60), 0),
        ("hdr_photo.hdr", "hdr", "image/vnd.radiance", (96, 60), 1),
        ("hdr_bright.hdr", "hdr", "image/vnd.radiance", (96, 60), 1),
        ("exr_bright.exr", "exr", "image/x-exr", (96, 60), 1),
        ("exr_half_tiled.exr", "exr", "image/x-exr", (96, 60), 1),
        ("exr_alpha_zip.exr", "exr", "image/x-exr", (64, 48), 1),
    ];
    for (i, (name, format, mime, (w, h), tolerance)) in cases.into_iter().enumerate() {
        let (status, body) = node
            .upload(
                &key,
                fixture(&format!("formats/{name}")),
                &format!("new/f{i}.bin"),
            )
            .await;
        assert_eq!(status, 201, "{name}: {body}");
        assert_eq!(body["format"], format, "{name}");
        assert_eq!(body["dimensions"]["width"], w, "{name}");
        assert_eq!(body["dimensions"]["height"], h, "{name}");
        let id = body["id"].as_str().unwrap();
        let (status, _, meta) = node
            .api(
                reqwest::Method::GET,
                &format!("/api/v1/images/{id}"),
                &key,
                None,
            )
            .await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(meta["metadata"]["mime_type"], mime, "{name}");
        let stored = body["paths"][0].as_str().unwrap().to_string();
        let stem = stored.rsplit_once('.').map_or(stored.as_str(), |(s, _)| s);

        let (status, headers, png) = node.fetch(&format!("/i/acme/{stem}.png?w={w}")).await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&png));
        assert_eq!(headers["content-type"], "image/png", "{name}");
        let got = decode(&png).to_rgba8();
        let reference = fixture(&format!("formats/ref_{}.png", name.replace('.', "_")));
        let want = decode(&reference).to_rgba8();
        assert_eq!(got.dimensions(), want.dimensions(), "{name}");
        let worst = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(
            worst <= tolerance,
            "{name}: up to {worst} from its reference"
        );

        let (status, headers, webp) = node
            .fetch(&format!("/i/acme/{stem}.webp?w={}", w / 2))
            .await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&webp));
        assert_eq!(headers["content-type"], "image/webp", "{name}");
        assert_eq!(
            decode(&webp).to_rgba8().dimensions(),
            (w / 2, h / 2),
            "{name}"
        );
    }
}

/// HEIC (libheif) uploaded through the API as `.bin`, sniffed, reported as `heic` /
/// `image/heic` with its displayed size, and delivered: as WebP at a width, and as PNG at full
/// size compared pixel for pixel with heif-convert's decode (`ref_*.png`). The irot + EXIF 6
/// file must come out turned once (60x96), the 10-bit one rounded to within one of the
/// reference, the alpha one with its transparent corner, the P3 one converted to sRGB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heic_uploads_and_renders_like_heif_convert() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    // (fixture, source size, tolerance against the reference PNG)
    let cases = [
        ("formats/heic_photo.heic", (96, 60), Some(0)),
        ("formats/heic_10bit.heic", (96, 60), Some(1)),
        ("formats/heic_alpha.heic", (64, 48), Some(0)),
        ("formats/heic_irot_exif6.heic", (60, 96), Some(0)),
        ("formats/heic_grid.heic", (192, 120), Some(0)),
        ("color/p3_nclx.heic", (32, 32), None),
    ];
    for (i, (rel, (w, h), tolerance)) in cases.into_iter().enumerate() {
        let (status, body) = node
            .upload(&key, fixture(rel), &format!("phone/h{i}.bin"))
            .await;
        assert_eq!(status, 201, "{rel}: {body}");
        assert_eq!(body["format"], "heic", "{rel}");
        assert_eq!(body["dimensions"]["width"], w, "{rel}");
        assert_eq!(body["dimensions"]["height"], h, "{rel}");
        let id = body["id"].as_str().unwrap();
        let (status, _, meta) = node
            .api(
                reqwest::Method::GET,
                &format!("/api/v1/images/{id}"),
                &key,
                None,
            )
            .await;
        assert_eq!(status, 200, "{rel}");
        assert_eq!(meta["metadata"]["mime_type"], "image/heic", "{rel}");
        let stored = body["paths"][0].as_str().unwrap().to_string();
        let stem = stored.rsplit_once('.').map_or(stored.as_str(), |(s, _)| s);

        let (status, headers, webp) = node
            .fetch(&format!("/i/acme/{stem}.webp?w={}", w / 2))
            .await;
        assert_eq!(status, 200, "{rel}: {}", String::from_utf8_lossy(&webp));
        assert_eq!(headers["content-type"], "image/webp", "{rel}");
        assert_eq!(
            decode(&webp).to_rgba8().dimensions(),
            (w / 2, h / 2),
            "{rel}"
        );

        let (status, _, png) = node.fetch(&format!("/i/acme/{stem}.png")).await;
        assert_eq!(status, 200, "{rel}");
        let got = decode(&png).to_rgba8();
        assert_eq!(got.dimensions(), (w, h), "{rel}");
        match tolerance {
            Some(tolerance) => {
                let name = rel.trim_start_matches("formats/");
                let reference = decode(&fixture(&format!(
                    "formats/ref_{}.png",
                    name.replace('.', "_")
                )))
                .to_rgba8();
                let worst = got
                    .as_raw()
                    .iter()
                    .zip(reference.as_raw())
                    .map(|(a, b)| a.abs_diff(*b))
                    .max();
                assert!(worst <= Some(tolerance), "{rel}: off by {worst:?}");
            }
            None => {
                // P3 (200, 60, 50) is sRGB (217.5, 41.6, 38.8).
                let p = got.get_pixel(16, 16).0;
                let want = [218u8, 42, 39, 255];
                let close = p.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 4);
                assert!(close, "{rel}: {p:?}, want {want:?}");
            }
        }
    }
}

/// The HEIC hostile files are refused at upload with 422 and the JSON error body naming why:
/// too large from the declarations (before libheif decodes anything), corrupt when cut.
#[tokio::test]
async fn hostile_heic_uploads_answer_422() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    for (name, code) in [
        ("bomb_heic_ispe.heic", "IMAGE_TOO_LARGE"),
        ("bomb_heic_grid.heic", "IMAGE_TOO_LARGE"),
        ("heic_sps_bigger.heic", "IMAGE_TOO_LARGE"),
        ("truncated_heic.heic", "CORRUPT_IMAGE"),
    ] {
        let (status, body) = node
            .upload(&key, fixture(&format!("hostile/{name}")), "phone/bad.heic")
            .await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
    }
}

/// Mean absolute difference over every RGBA channel of two images of one size.
fn mean_difference(a: &image::RgbaImage, b: &image::RgbaImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// An SVG uploaded through the API (named `.bin`: sniffed from the bytes) is reported as
/// `svg` with its intrinsic size and media type, and rendered at the size asked for: a 64x48
/// icon delivered at 640 px wide is drawn at 640 px (crisp edges, as rsvg-convert draws it at
/// that size), not enlarged from 64 px. Its transparency is kept, and its own `.svg` URL is a
/// 400 (the raw SVG is never served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svg_uploads_and_renders_sharp_at_the_requested_size() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let (status, body) = node
        .upload(&key, fixture("formats/svg_shapes.svg"), "art/logo.bin")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["format"], "svg");
    assert_eq!(body["dimensions"]["width"], 64);
    assert_eq!(body["dimensions"]["height"], 48);
    // Delivered converted: the URL handed out names a PNG.
    let stored = body["paths"][0].as_str().unwrap().to_string();
    assert!(stored.ends_with(".svg"), "{body}");
    let stem = stored.trim_end_matches(".svg").to_string();
    assert!(
        body["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/i/acme/{stem}.png")),
        "{body}"
    );
    let id = body["id"].as_str().unwrap();
    let (status, _, meta) = node
        .api(
            reqwest::Method::GET,
            &format!("/api/v1/images/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(meta["metadata"]["mime_type"], "image/svg+xml");

    let (status, headers, png) = node.fetch(&format!("/i/acme/{stem}.png?w=640")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    assert_eq!(headers["content-type"], "image/png");
    let big = decode(&png).to_rgba8();
    assert_eq!(big.dimensions(), (640, 480));
    // The quadrant edge at x = 320 is one step from red to green: no interpolation blur.
    assert_eq!(big.get_pixel(319, 60).0, [255, 0, 0, 255]);
    assert_eq!(big.get_pixel(320, 60).0, [0, 255, 0, 255]);
    let reference = decode(&fixture("formats/ref_svg_shapes_640.png")).to_rgba8();
    let sharp = mean_difference(&big, &reference);
    // What enlarging the 64 px render would have given instead.
    let (_, _, small) = node.fetch(&format!("/i/acme/{stem}.png")).await;
    let enlarged = image::imageops::resize(
        &decode(&small).to_rgba8(),
        640,
        480,
        image::imageops::FilterType::CatmullRom,
    );
    let blurred = mean_difference(&enlarged, &reference);
    assert!(
        sharp < 1.0,
        "640 px render differs from rsvg-convert's by {sharp:.2} on average"
    );
    assert!(
        blurred > 3.0 * sharp,
        "enlarged: {blurred:.2}, rendered: {sharp:.2}"
    );

    // Transparency kept: the alpha fixture's empty corner stays transparent in WebP.
    node.add_image(
        "acme",
        "art/alpha.svg",
        &fixture("formats/svg_alpha.svg"),
        Visibility::Public,
    )
    .await;
    let (status, _, webp) = node.fetch("/i/acme/art/alpha.webp?w=128").await;
    assert_eq!(status, 200);
    let alpha = decode(&webp).to_rgba8();
    assert_eq!(alpha.dimensions(), (128, 96));
    assert_eq!(alpha.get_pixel(120, 90).0[3], 0);
    let red = alpha.get_pixel(10, 10).0;
    assert!(
        close([red[0], red[1], red[2]], [255, 0, 0], 8) && red[3] == 255,
        "{red:?}"
    );

    // No `.svg` delivery: a 400 with the JSON error, never the SVG's bytes.
    let (status, headers, body) = node.fetch(&format!("/i/acme/{stem}.svg")).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    assert!(!String::from_utf8_lossy(&body).contains("<svg"));
}

/// An SVG pointing at a local HTTP listener and at a file on disk renders without either:
/// the listener never sees a connection, and the picture is what the SVG draws by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svg_references_are_never_fetched() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let png = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/formats/png_rgba.png"
    );
    let svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' xmlns:xlink='http://www.w3.org/1999/xlink' \
         width='64' height='48'><style>@import url(http://127.0.0.1:{port}/a.css);</style>\
         <rect width='64' height='48' fill='#00ff00'/>\
         <image width='64' height='48' href='http://127.0.0.1:{port}/a.png'/>\
         <image width='64' height='48' xlink:href='{png}'/>\
         <image width='64' height='48' href='file://{png}'/>\
         <text x='2' y='40' font-family='url(http://127.0.0.1:{port}/f.ttf)'> </text></svg>"
    );
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let (status, body) = node.upload(&key, svg.into_bytes(), "x/refs.svg").await;
    assert_eq!(status, 201, "{body}");
    let (status, _, out) = node.fetch("/i/acme/x/refs.png?w=64").await;
    assert_eq!(status, 200);
    let img = decode(&out).to_rgba8();
    // png_rgba.png is red/green/blue/transparent quadrants: none of it shows.
    assert!(img.pixels().all(|p| p.0 == [0, 255, 0, 255]));
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener was contacted: {other:?}"),
    }
}

#[tokio::test]
async fn uploads_report_alpha_and_frame_count() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    for (rel, has_alpha, frames) in [
        ("formats/gif_animated.gif", None, None),
        ("formats/webp_animated.webp", None, None),
        ("formats/png_rgba.png", Some(true), Some(1)),
        ("photos/ladybird.jpg", Some(false), Some(1)),
    ] {
        let name = rel.rsplit('/').next().unwrap();
        let (status, up) = node.upload(&key, fixture(rel), name).await;
        assert_eq!(status, 201, "{rel}: {up}");
        let id = up["id"].as_str().unwrap();
        let (_, _, got) = node
            .api(
                reqwest::Method::GET,
                &format!("/api/v1/images/{id}"),
                &key,
                None,
            )
            .await;
        let meta = &got["metadata"];
        if let Some(a) = has_alpha {
            assert_eq!(meta["has_alpha"], a, "{rel}: {meta}");
        } else {
            assert!(meta["has_alpha"].is_boolean(), "{rel}: {meta}");
        }
        match frames {
            Some(n) => assert_eq!(meta["frame_count"], n, "{rel}: {meta}"),
            None => assert!(meta["frame_count"].as_u64().unwrap() > 1, "{rel}: {meta}"),
        }
    }
}

/// A JPEG XL original is also an output format: the URL the API hands out is its own `.jxl`,
/// which answers the stored bytes untouched, while a `.jxl` URL with a transform is rendered
/// and encoded by libjxl (decoded here by djxl at the asked size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jxl_original_passes_through_at_its_own_extension() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let original = fixture("formats/jxl_lossy.jxl");
    let (status, body) = node.upload(&key, original.clone(), "pics/j.jxl").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["format"], "jxl");
    let url = body["url"].as_str().unwrap();
    assert!(url.ends_with("/i/acme/pics/j.jxl"), "{url}");

    let (status, headers, bytes) = node.fetch("/i/acme/pics/j.jxl").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(headers["content-type"], "image/jxl");
    assert_eq!(headers["x-cache"], "ORIGINAL");
    assert!(bytes == original, "the stored bytes, untouched");

    let (status, headers, small) = node.fetch("/i/acme/pics/j.jxl?w=48").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&small));
    assert_eq!(headers["content-type"], "image/jxl");
    assert_ne!(headers["x-cache"], "ORIGINAL");
    assert_eq!(djxl(&small).to_rgb8().dimensions(), (48, 30));
}

/// A bare original URL of a JPEG answers its pixels byte for byte without what the phone
/// wrote about it: no GPS, camera make, XMP or comment; the Orientation stays so browsers
/// still turn it upright.
#[tokio::test]
async fn a_bare_jpeg_original_is_answered_without_its_metadata() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let original = fixture("formats/jpeg_gps_orient6.jpg");
    let (status, up) = node.upload(&key, original.clone(), "trip/p.jpg").await;
    assert_eq!(status, 201, "{up}");
    for _ in 0..2 {
        // The second answer comes from the cache.
        let (status, headers, body) = node.fetch("/i/acme/trip/p.jpg").await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-cache"], "ORIGINAL");
        assert_eq!(headers["content-type"], "image/jpeg");
        for needle in [
            &b"TestCam"[..],
            b"someone",
            b"shot at home",
            b"http://ns.adobe.com",
        ] {
            assert!(
                !body.windows(needle.len()).any(|w| w == needle),
                "{} still in the answer",
                String::from_utf8_lossy(needle)
            );
        }
        let exif = exif::Reader::new()
            .read_from_container(&mut std::io::Cursor::new(&body[..]))
            .expect("the Orientation's Exif");
        assert!(
            exif.fields().all(|f| f.ifd_num == exif::In::PRIMARY
                && !matches!(f.tag.context(), exif::Context::Gps)),
            "only IFD0 tags, no GPS"
        );
        let orientation = exif
            .get_field(exif::Tag::Orientation, exif::In::PRIMARY)
            .and_then(|f| f.value.get_uint(0));
        assert_eq!(orientation, Some(6));
        // The picture itself: the same scan bytes, the same pixels.
        let sos = |b: &[u8]| b.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        assert_eq!(&body[sos(&body)..], &original[sos(&original)..]);
        assert_eq!(
            decode(&body).to_rgb8().into_raw(),
            decode(&original).to_rgb8().into_raw()
        );
    }
}

/// Runs an ImageMagick or libwebp command-line tool (Debian's `imagemagick` and `webp`, which
/// tests/setup.sh installs) on `bytes` written to a file named `name`; answers its stdout.
fn tool(program: &str, args: &[&str], bytes: &[u8], name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(name);
    std::fs::write(&input, bytes).unwrap();
    let mut command = std::process::Command::new(program);
    command.current_dir(dir.path());
    for arg in args {
        command.arg(arg.replace("{}", name));
    }
    let run = command
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (bash tests/setup.sh): {e}"));
    assert!(
        run.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// What `webpmux -info` (libwebp's own tool) says of an animated WebP: canvas size, loop
/// count and each frame's duration in ms; `None` for a still.
fn webpmux_info(webp: &[u8]) -> Option<((u32, u32), u32, Vec<u32>)> {
    let info = tool("webpmux", &["-info", "{}"], webp, "a.webp");
    if !info.contains("animation") {
        return None;
    }
    let field = |key: &str| -> String {
        let line = info.lines().find(|l| l.contains(key)).expect(key);
        line[line.find(key).unwrap() + key.len()..]
            .trim_start_matches([' ', ':'])
            .to_string()
    };
    let canvas = field("Canvas size");
    let (w, h) = canvas.split_once(" x ").expect("canvas");
    let loops = field("Loop Count").trim().parse().expect("loop count");
    // Frame rows: "  1:   60    40    no ...  duration ...": the 7th column.
    let durations = info
        .lines()
        .filter(|l| {
            l.trim_start()
                .split(':')
                .next()
                .is_some_and(|n| n.trim().parse::<u32>().is_ok())
        })
        .map(|l| l.split_whitespace().nth(6).unwrap().parse().unwrap())
        .collect();
    Some((
        (w.trim().parse().unwrap(), h.trim().parse().unwrap()),
        loops,
        durations,
    ))
}

/// The composited frames of an animated WebP, decoded by the `image` crate (image-webp, not
/// the libwebp that encoded it).
fn webp_frames(webp: &[u8]) -> Vec<image::RgbaImage> {
    use image::AnimationDecoder;
    let decoder = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(webp)).unwrap();
    decoder
        .into_frames()
        .map(|f| f.unwrap().into_buffer())
        .collect()
}

/// (delay in cs, width, height) of each frame, the play count, the composited frames.
type MagickGif = (Vec<(u32, u32, u32)>, Option<u32>, Vec<image::RgbaImage>);

/// A GIF answer as ImageMagick reads it: (delay in cs, width, height) of each frame, the
/// play count it reports ("Iterations", which it leaves out for 0 = forever and for a file
/// without a loop extension), and its composited frames (`-coalesce`, read back as PNG).
fn magick_gif(gif: &[u8]) -> MagickGif {
    let listing = tool("identify", &["-format", "%T %W %H\n", "{}"], gif, "a.gif");
    let frames = listing
        .lines()
        .map(|l| {
            let v: Vec<u32> = l.split(' ').map(|n| n.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    let verbose = tool("identify", &["-verbose", "{}[0]"], gif, "a.gif");
    let iterations = verbose
        .lines()
        .find_map(|l| l.trim().strip_prefix("Iterations:"))
        .map(|n| n.trim().parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.gif"), gif).unwrap();
    let run = std::process::Command::new("convert")
        .current_dir(dir.path())
        .args(["a.gif", "-coalesce", "PNG32:f_%d.png"])
        .output()
        .expect("convert runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let composited = (0..)
        .map(|i| dir.path().join(format!("f_{i}.png")))
        .take_while(|p| p.exists())
        .map(|p| decode(&std::fs::read(p).unwrap()).to_rgba8())
        .collect();
    (frames, iterations, composited)
}

/// Mean of each channel over a `w` x `h` box at (x, y).
fn box_mean(image: &image::RgbaImage, (x, y, w, h): (u32, u32, u32, u32)) -> [f64; 3] {
    let mut sum = [0.0; 3];
    for yy in y..y + h {
        for xx in x..x + w {
            let p = image.get_pixel(xx, yy).0;
            (0..3).for_each(|c| sum[c] += f64::from(p[c]));
        }
    }
    sum.map(|s| s / f64::from(w * h))
}

/// The source animation's frames, as the asserts below read them at 60x40: frame 1 the
/// photo, frame 2 the photo with a blue top-left third (20x15 here), frame 3 its negative.
fn assert_photo_frames(frames: &[image::RgbaImage], what: &str) {
    assert_eq!(frames.len(), 3, "{what}");
    let corner = (2, 2, 14, 10);
    let blue = box_mean(&frames[1], corner);
    assert!(
        blue[2] > 180.0 && blue[0] < 70.0,
        "{what}: frame 2 corner {blue:?}"
    );
    let photo = box_mean(&frames[0], corner);
    assert!(
        photo[2] < 150.0 || photo[0] > 70.0,
        "{what}: frame 1 corner {photo:?}"
    );
    // Outside the square frames 1 and 2 are the same photo; frame 3 is its negative.
    let rest = (30, 20, 28, 18);
    let (a, b, c) = (
        box_mean(&frames[0], rest),
        box_mean(&frames[1], rest),
        box_mean(&frames[2], rest),
    );
    for ch in 0..3 {
        assert!(
            (a[ch] - b[ch]).abs() < 6.0,
            "{what}: frames 1 and 2 {a:?} {b:?}"
        );
        assert!(
            (a[ch] + c[ch] - 255.0).abs() < 12.0,
            "{what}: negative {a:?} {c:?}"
        );
    }
}

/// An animated GIF (3 frames, one a sub-rectangle, 20/50/100 cs, 3 plays) uploaded through the
/// API and rendered at 60 px wide: `.webp` and `.gif` keep every frame, its timing and the loop
/// count (read back by webpmux and ImageMagick), each frame resized the same; `.jpg` is the
/// first frame; `frame=N` picks one, `animated=false` the first, both spellings of the first
/// frame sharing a cache entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn animated_gifs_stay_animated_as_webp_and_gif() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let (status, up) = node
        .upload(&key, fixture("formats/gif_anim_photo.gif"), "anim/bug.gif")
        .await;
    assert_eq!(status, 201, "{up}");
    let gif_url = up["available_formats"]["gif"]
        .as_str()
        .expect("gif for an animation");
    assert!(gif_url.ends_with("/i/acme/anim/bug.gif"), "{gif_url}");
    // The URL handed out keeps it animated (a still GIF's is `.png`).
    assert_eq!(up["url"].as_str(), Some(gif_url), "{up}");
    let (_, _, got) = node
        .api(
            reqwest::Method::GET,
            &format!("/api/v1/images/{}", up["id"].as_str().unwrap()),
            &key,
            None,
        )
        .await;
    assert_eq!(got["metadata"]["frame_count"], 3, "{got}");
    assert!(got["urls"]["gif"].is_string(), "{got}");

    let (status, headers, webp) = node.fetch("/i/acme/anim/bug.webp?w=60").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&webp));
    assert_eq!(headers["content-type"], "image/webp");
    let (canvas, loops, durations) = webpmux_info(&webp).expect("an animated WebP");
    assert_eq!(canvas, (60, 40));
    assert_eq!(loops, 3);
    assert_eq!(durations, [200, 500, 1000]);
    let frames = webp_frames(&webp);
    assert!(frames.iter().all(|f| f.dimensions() == (60, 40)));
    assert_photo_frames(&frames, "webp");

    let (status, headers, gif) = node.fetch("/i/acme/anim/bug.gif?w=60").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&gif));
    assert_eq!(headers["content-type"], "image/gif");
    let (listing, iterations, composited) = magick_gif(&gif);
    assert_eq!(listing, [(20, 60, 40), (50, 60, 40), (100, 60, 40)]);
    assert_eq!(iterations, Some(3));
    assert_photo_frames(&composited, "gif");

    // Other formats take the first frame.
    let (status, _, jpg) = node.fetch("/i/acme/anim/bug.jpg?w=60").await;
    assert_eq!(status, 200);
    let first = decode(&jpg).to_rgba8();
    assert_eq!(first.dimensions(), (60, 40));
    let corner = box_mean(&first, (2, 2, 14, 10));
    let expected = box_mean(&frames[0], (2, 2, 14, 10));
    assert!(
        (0..3).all(|c| (corner[c] - expected[c]).abs() < 12.0),
        "{corner:?} {expected:?}"
    );

    // frame=N: that frame, as a still.
    let (status, _, second) = node.fetch("/i/acme/anim/bug.webp?w=60&frame=1").await;
    assert_eq!(status, 200);
    assert!(webpmux_info(&second).is_none(), "a still WebP");
    let blue = box_mean(&decode(&second).to_rgba8(), (2, 2, 14, 10));
    assert!(blue[2] > 180.0 && blue[0] < 70.0, "{blue:?}");
    let (status, h, body) = node.fetch("/i/acme/anim/bug.webp?w=60&frame=3").await;
    crate::harness::assert_json_error(status, &h, &body, 400, "VALIDATION_ERROR");
    assert!(String::from_utf8_lossy(&body).contains("frame must be"));

    // animated=false and frame=0 are one variant: the first frame, still.
    let (status, h, still) = node
        .fetch("/i/acme/anim/bug.webp?w=60&animated=false")
        .await;
    assert_eq!(status, 200);
    assert_eq!(h["x-cache"], "MISS");
    assert!(webpmux_info(&still).is_none());
    let (status, h, again) = node.fetch("/i/acme/anim/bug.webp?frame=0&w=60").await;
    assert_eq!(status, 200);
    assert!(
        h["x-cache"].to_str().unwrap().starts_with("HIT"),
        "{:?}",
        h["x-cache"]
    );
    assert_eq!(still, again);
}

/// An animated WebP source keeps its frames, durations and loop count as GIF and as WebP, with
/// the effects applied to every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn animated_webps_stay_animated_with_effects_on_every_frame() {
    let node = TestNode::start().await;
    let key = node.account_key("acme", "read,write").await;
    let (status, up) = node
        .upload(
            &key,
            fixture("formats/webp_anim_photo.webp"),
            "anim/bug.webp",
        )
        .await;
    assert_eq!(status, 201, "{up}");
    assert!(up["available_formats"]["gif"].is_string(), "{up}");

    let (status, _, gif) = node.fetch("/i/acme/anim/bug.gif?w=60").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&gif));
    let (listing, iterations, composited) = magick_gif(&gif);
    assert_eq!(listing, [(20, 60, 40), (50, 60, 40), (100, 60, 40)]);
    assert_eq!(iterations, Some(3));
    assert_photo_frames(&composited, "webp to gif");

    let (status, _, webp) = node
        .fetch("/i/acme/anim/bug.webp?w=60&flip=h&grayscale=true")
        .await;
    assert_eq!(status, 200);
    let (canvas, loops, durations) = webpmux_info(&webp).expect("animated");
    assert_eq!(
        (canvas, loops, durations),
        ((60, 40), 3, vec![200, 500, 1000])
    );
    let frames = webp_frames(&webp);
    for frame in &frames {
        assert!(
            frame
                .pixels()
                .all(|p| p[0].abs_diff(p[1]) < 6 && p[1].abs_diff(p[2]) < 6),
            "every frame grey"
        );
    }
    // Flipped: the square of frame 2 is now top-right, lighter than the photo's grey there.
    let right = box_mean(&frames[1], (44, 2, 14, 10));
    let right_before = box_mean(&frames[0], (44, 2, 14, 10));
    assert!(
        (right[0] - right_before[0]).abs() > 10.0,
        "{right:?} {right_before:?}"
    );
}

/// A still asked as `.gif` is a one-frame GIF with its own palette.
#[tokio::test]
async fn a_still_asked_as_gif_is_one_frame() {
    let node = TestNode::start().await;
    node.add_image(
        "acme",
        "p/ladybird.jpg",
        &fixture("photos/ladybird.jpg"),
        Visibility::Public,
    )
    .await;
    let (status, headers, gif) = node.fetch("/i/acme/p/ladybird.gif?w=120").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&gif));
    assert_eq!(headers["content-type"], "image/gif");
    let (listing, iterations, composited) = magick_gif(&gif);
    assert_eq!(listing, [(0, 120, 75)]);
    assert_eq!(iterations, None);
    assert!(
        !gif.windows(11).any(|w| w == b"NETSCAPE2.0"),
        "no loop extension: played once"
    );
    let png = decode(&node.fetch("/i/acme/p/ladybird.png?w=120").await.2).to_rgba8();
    let err = mean_abs_error(composited[0].as_raw(), png.as_raw());
    assert!(err < 6.0, "palette error {err}");
}
