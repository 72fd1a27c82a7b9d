//! The S3 origin against a real S3-compatible server (moto) started on 127.0.0.1 by the test.

use crate::harness::{Moto, TestNode, dimensions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originals_live_in_s3_and_render_from_there() {
    let moto = Moto::start().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // moto accepts unsigned bucket creation.
    let created = client
        .put(format!("{}/imgnode-test", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());

    let creds = Moto::credentials();
    let node = TestNode::start_with(&format!(
        "[origin]\nkind = \"s3\"\nbucket = \"imgnode-test\"\nendpoint = \"{}\"\npath_style = true\nallow_http = true\nprefix = \"originals\"\ncredentials_file = \"{}\"\n",
        moto.endpoint,
        creds.path().display()
    ))
    .await;

    // The demo seed went to the bucket, sealed, under the prefix and a random name.
    let image = node
        .app
        .state
        .store
        .image_by_stem("demo", "ladybird")
        .await
        .unwrap()
        .unwrap();
    let listing = client
        .get(format!("{}/imgnode-test?list-type=2", moto.endpoint))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let object = node.object_of("demo", &image.hash).await;
    assert!(
        listing.contains(&format!("originals/{object}")),
        "{listing}"
    );
    assert!(!listing.contains(&image.hash), "{listing}");
    // Nothing was written to the local originals folder.
    assert!(!node.data_dir().join("originals").exists());

    let (status, headers, body) = node.fetch("/i/demo/ladybird.webp?w=240").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/webp");
    assert_eq!(dimensions(&body), (240, 150));
    // A srcset of six widths fetches the original once (originals cache for remote origins).
    let before = node.metric("imgnode_origin_fetches_total", &[]).await;
    for w in [100, 200, 300, 400, 500, 600] {
        assert_eq!(
            node.fetch(&format!("/i/demo/elephants.webp?w={w}")).await.0,
            200
        );
    }
    assert_eq!(
        node.metric("imgnode_origin_fetches_total", &[]).await - before,
        1.0
    );
    let (status, _, body) = node.fetch("/i/demo/ladybird.jpg").await;
    assert_eq!(status, 200);
    assert_eq!(body.len() as u64, image.size);

    // The bucket going away is a 502, not a 404 or a hang.
    drop(moto);
    let (status, _, _) = node.fetch("/i/demo/dune.webp?w=10").await;
    assert!(status == 502 || status == 504, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_never_answers_is_504_origin_timeout() {
    // An "S3 endpoint" that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let creds = Moto::credentials();
    let node = TestNode::start_with(&format!(
        "[origin]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"{endpoint}\"\npath_style = true\nallow_http = true\ntimeout = \"1s\"\ncredentials_file = \"{}\"\n[demo]\nseed = false\n",
        creds.path().display()
    ))
    .await;
    // Metadata that points at an original the origin will never deliver.
    let state = &node.app.state;
    state.store.create_account("acme", "free").await.unwrap();
    let hash = "ab".repeat(32);
    state
        .store
        .put_image(
            &imgnode::store::NewImage {
                account: "acme".into(),
                id: hash[..16].to_string(),
                hash: hash.clone(),
                format: imgnode::pipeline::SourceFormat::Jpeg,
                width: 10,
                height: 10,
                size: 1000,
                original_filename: "x.jpg".into(),
                visibility: imgnode::store::Visibility::Public,
                dominant_color: None,
                has_alpha: None,
                frames: None,
            },
            "x.jpg",
            "x",
            Default::default(),
        )
        .await
        .unwrap();
    for path in ["/i/acme/x.png?w=5", "/i/acme/x.jpg"] {
        let (status, h, body) = node.fetch(path).await;
        crate::harness::assert_json_error(status, &h, &body, 504, "ORIGIN_TIMEOUT");
    }
    hold.abort();
}
