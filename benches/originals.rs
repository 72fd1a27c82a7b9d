//! What encryption at rest adds to a cold render (issue 21): reading an original sealed
//! (metadata row, key unwrap, streamed AES-256-GCM open) against reading the same bytes as
//! the plaintext object of an earlier version, from the local folder and from S3 (a moto
//! server on loopback, when `moto_server` is on PATH), beside the cold render they feed.
//!
//! Run: `cargo bench --bench originals` (release profile). The original is the 12 MP JPEG of
//! `benches/pipeline.rs` (`elephants.jpg` upscaled to 4000x3000, q90); the render is the
//! common thumbnail, 400 px wide JPEG.
//!
//! Figures, 2026-12-07, `cargo bench --bench originals`, 2 vCPU VM (AVX-512, VAES), release,
//! criterion median, on a machine shared with another build (load average about 2):
//!
//! | bench | time |
//! |---|---|
//! | originals/render_12mp_to_400w_jpg | 27.4 ms |
//! | originals/fs_read_plaintext | 0.116 ms |
//! | originals/fs_read_sealed | 0.394 ms |
//! | originals/s3_read_plaintext (moto) | 4.57 ms |
//! | originals/s3_read_sealed (moto) | 4.18 ms |
//!
//! Sealing adds 0.28 ms to a local read, 1.0% of the render; nothing measurable on S3.
//! Reading: benches/RESULTS.md "Encryption at rest".

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use imgnode::config::OriginConfig;
use imgnode::origin::{Kek, Origin, Originals};
use imgnode::pipeline::{self, DecodeHint, EncodeSettings, Limits, OutputFormat, Transform, probe};
use imgnode::store::Store;
use sha2::{Digest, Sha256};

const ELEPHANTS: &[u8] = include_bytes!("../tests/fixtures/photos/elephants.jpg");

fn twelve_megapixel_jpeg() -> Vec<u8> {
    let limits = Limits::default();
    let info = probe(ELEPHANTS, &limits).expect("probe");
    let image =
        pipeline::decode_upright(ELEPHANTS, &info, &limits, DecodeHint::default()).expect("decode");
    let to = Transform {
        width: Some(4000),
        height: Some(3000),
        ..Transform::default()
    };
    let big = pipeline::resize_image(image, &to, &limits).expect("upscale");
    pipeline::encode_image(&big, OutputFormat::Jpeg, 90, &EncodeSettings::default())
        .expect("encode")
}

/// An origin with the photo stored both ways: sealed for `bench`, plaintext by hash.
async fn stored(origin: Origin, dir: &std::path::Path, photo: &[u8]) -> (Originals, String) {
    let store = Store::open(&format!("sqlite://{}", dir.join("bench.db").display()))
        .await
        .expect("store");
    store
        .create_account("bench", "free")
        .await
        .expect("account");
    let originals = Originals::new(origin, Arc::new(Kek::from_keys(&[[7; 32]])), store);
    let hash = hex::encode(Sha256::digest(photo));
    originals
        .write("bench", &hash, photo)
        .await
        .expect("sealed write");
    originals
        .origin()
        .put_plaintext_legacy(&hash, Bytes::copy_from_slice(photo))
        .await
        .expect("plaintext write");
    (originals, hash)
}

struct MotoServer(std::process::Child);

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A moto server and an S3 origin on it, or `None` without `moto_server`.
async fn moto_origin(dir: &std::path::Path) -> Option<(MotoServer, Origin)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let server = MotoServer(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().build().ok()?;
    let mut created = false;
    for _ in 0..100 {
        if let Ok(r) = client.put(format!("{endpoint}/bench")).send().await
            && r.status().is_success()
        {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !created {
        return None;
    }
    let creds = dir.join("s3.creds");
    std::fs::write(
        &creds,
        "access_key_id = \"testing\"\nsecret_access_key = \"testing-secret\"\n",
    )
    .ok()?;
    let origin = Origin::from_config(&OriginConfig::S3 {
        bucket: "bench".into(),
        region: "us-east-1".into(),
        endpoint,
        path_style: true,
        allow_http: true,
        credentials_file: Some(creds),
        prefix: String::new(),
        timeout: Duration::from_secs(30),
        sse: None,
    })
    .ok()?;
    Some((server, origin))
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let photo = twelve_megapixel_jpeg();
    println!("original: {} bytes, 4000x3000", photo.len());
    let max = u64::MAX;
    let mut g = c.benchmark_group("originals");
    g.sample_size(30).measurement_time(Duration::from_secs(8));

    let limits = Limits::default();
    let settings = EncodeSettings::default();
    let thumb = Transform {
        width: Some(400),
        ..Transform::default()
    };
    g.bench_function("render_12mp_to_400w_jpg", |b| {
        b.iter(|| {
            pipeline::render(
                black_box(&photo),
                &thumb,
                OutputFormat::Jpeg,
                &limits,
                &settings,
            )
            .expect("render")
        })
    });

    let fs_dir = tempfile::tempdir().expect("tempdir");
    let fs_origin = Origin::from_config(&OriginConfig::Fs {
        path: fs_dir.path().join("originals"),
    })
    .expect("fs origin");
    let (fs, hash) = rt.block_on(stored(fs_origin, fs_dir.path(), &photo));
    g.bench_function("fs_read_plaintext", |b| {
        b.iter(|| {
            rt.block_on(fs.origin().get_plaintext(&hash, max))
                .expect("read")
        })
    });
    g.bench_function("fs_read_sealed", |b| {
        b.iter(|| rt.block_on(fs.read("bench", &hash, max)).expect("read"))
    });

    let s3_dir = tempfile::tempdir().expect("tempdir");
    match rt.block_on(moto_origin(s3_dir.path())) {
        None => println!("moto_server not found: S3 figures skipped"),
        Some((_server, s3_origin)) => {
            let (s3, hash) = rt.block_on(stored(s3_origin, s3_dir.path(), &photo));
            g.bench_function("s3_read_plaintext", |b| {
                b.iter(|| {
                    rt.block_on(s3.origin().get_plaintext(&hash, max))
                        .expect("read")
                })
            });
            g.bench_function("s3_read_sealed", |b| {
                b.iter(|| rt.block_on(s3.read("bench", &hash, max)).expect("read"))
            });
        }
    }
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
