//! The public /health and the ops listener: /live, /ready, /metrics.

use crate::harness::TestNode;

#[tokio::test]
async fn health_is_json_with_an_rfc3339_timestamp() {
    let node = TestNode::start().await;
    let res = node.get("/health").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    let ts = v["timestamp"].as_str().unwrap();
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{ts}: {e}"));
}

#[tokio::test]
async fn live_ready_and_metrics_are_on_the_ops_listener_only() {
    let node = TestNode::start().await;
    for path in ["/live", "/ready", "/metrics"] {
        let ops = node
            .client
            .get(format!("{}{path}", node.ops))
            .send()
            .await
            .unwrap();
        assert_eq!(ops.status(), 200, "{path}");
        assert_eq!(
            node.get(path).await.status(),
            404,
            "{path} leaked onto the public listener"
        );
    }
}

#[tokio::test]
async fn ready_turns_false_when_draining() {
    let node = TestNode::start().await;
    node.app.shutdown();
    let res = node.client.get(format!("{}/ready", node.ops)).send().await;
    // Either the listener has already closed, or it answers "not ready".
    if let Ok(res) = res {
        assert_eq!(res.status(), 503);
    }
}

#[tokio::test]
async fn metrics_count_requests_stages_and_bytes() {
    let node = TestNode::start().await;
    let body = node
        .get("/i/demo/ladybird.webp?w=200")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(node.get("/i/demo/missing.jpg").await.status(), 404);
    let m = |name: &'static str, labels: &'static [(&'static str, &'static str)]| {
        let node = &node;
        async move { node.metric(name, labels).await }
    };
    assert_eq!(
        m(
            "imgnode_http_requests_total",
            &[("route", "image"), ("status", "200")]
        )
        .await,
        1.0
    );
    assert_eq!(
        m(
            "imgnode_http_requests_total",
            &[("route", "image"), ("status", "404")]
        )
        .await,
        1.0
    );
    assert!(
        m("imgnode_http_response_bytes_total", &[("route", "image")]).await >= body.len() as f64
    );
    for stage in ["fetch", "decode", "resize", "encode"] {
        let labels: &'static [(&'static str, &'static str)] = match stage {
            "fetch" => &[("stage", "fetch")],
            "decode" => &[("stage", "decode")],
            "resize" => &[("stage", "resize")],
            _ => &[("stage", "encode")],
        };
        assert_eq!(
            m("imgnode_render_stage_duration_seconds_count", labels).await,
            1.0,
            "{stage}"
        );
    }
    assert_eq!(
        m(
            "imgnode_render_renders_total",
            &[("format", "webp"), ("outcome", "ok")]
        )
        .await,
        1.0
    );
    assert_eq!(m("imgnode_cpu_in_flight", &[]).await, 0.0);
    assert_eq!(m("imgnode_cpu_queue_depth", &[]).await, 0.0);
    assert!(
        m(
            "imgnode_http_request_duration_seconds_count",
            &[("route", "image"), ("cache", "MISS")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_accounts_and_images() {
    let node = TestNode::start().await;
    let before = node.fetch("/i/demo/dune.jpg").await;
    assert_eq!(before.0, 200);
    let dir = node.stop().await;
    // Seeding is skipped the second time: the account exists.
    let node = TestNode::start_in(dir, "").await;
    let after = node.fetch("/i/demo/dune.jpg").await;
    assert_eq!(after.0, 200);
    assert_eq!(before.2, after.2);
    assert_eq!(before.1["etag"], after.1["etag"]);
}

/// The scraped text passes `promtool check metrics` (naming, units, types, help), and has the
/// series the README's table promises, after traffic of every kind.
#[tokio::test]
async fn the_metrics_text_passes_promtool() {
    use std::io::Write;
    let node = TestNode::start().await;
    assert_eq!(node.fetch("/i/demo/ladybird.webp?w=90").await.0, 200);
    assert_eq!(node.fetch("/i/demo/ladybird.webp?w=90").await.0, 200);
    assert_eq!(node.fetch("/i/demo/nothing.webp").await.0, 404);
    let text = node.metrics_text().await;
    for name in [
        "imgnode_http_requests_total",
        "imgnode_http_request_duration_seconds_bucket",
        "imgnode_http_open_connections",
        "imgnode_cache_hits_total",
        "imgnode_cache_disk_bytes",
        "imgnode_cache_disk_io_duration_seconds_bucket",
        "imgnode_cpu_queue_depth",
        "imgnode_cpu_queue_wait_seconds_bucket",
        "imgnode_render_stage_duration_seconds_bucket",
        "imgnode_origin_fetches_total",
        "imgnode_process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} is missing");
    }
    assert!(
        node.metric("imgnode_process_resident_memory_bytes", &[])
            .await
            > 1_000_000.0
    );
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: run `bash tests/setup.sh`");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    node.stop().await;
}

/// The shipped alerting rules parse and use valid PromQL.
#[test]
fn the_alerting_rules_pass_promtool() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus-alerts.yml");
    crate::harness::promtool_check_rules(std::path::Path::new(rules));
}
