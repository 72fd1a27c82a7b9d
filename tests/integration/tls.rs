//! TLS on the public listener with a CA and certificates generated here: HTTP/2 and HTTP/1.1
//! both negotiated through ALPN by a real TLS client, and a certificate reload that new
//! connections see while an open connection keeps working.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::harness::TestNode;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A certificate for `localhost`, as `(chain PEM, key PEM)`.
    fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.issuer.pem().as_bytes()).unwrap()
    }
}

fn client(ca: &Ca, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca.root()]);
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn tls_negotiates_h2_and_http1_and_reloads_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = Ca::new("first test CA");
    let (cert, key) = first.server_cert();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let node = TestNode::start_with_env(
        dir,
        "[demo]\nseed = true\n",
        &[
            ("IMGNODE_SERVER__TLS_CERT_FILE", cert_path.to_str().unwrap()),
            ("IMGNODE_SERVER__TLS_KEY_FILE", key_path.to_str().unwrap()),
        ],
    )
    .await;
    let url = |path: &str| format!("https://localhost:{}{path}", node.app.public_addr.port());

    let h2 = client(&first, false);
    let res = h2
        .get(url("/i/demo/ladybird.webp?w=64"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/webp");
    let h1 = client(&first, true);
    let res = h1.get(url("/health")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    assert_eq!(res.status(), 200);
    // Plain HTTP on the TLS port is not served.
    assert!(
        node.client
            .get(format!("http://{}/health", node.app.public_addr))
            .send()
            .await
            .is_err()
    );

    // Reload with a certificate of another CA: new connections get it; the open HTTP/2
    // connection of the first client keeps working.
    let second = Ca::new("second test CA");
    let (cert, key) = second.server_cert();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    assert!(node.app.reload_tls().unwrap());
    let res = h2.get(url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200, "the open connection survived the reload");
    assert!(
        client(&first, true)
            .get(url("/health"))
            .send()
            .await
            .is_err()
    );
    assert_eq!(
        client(&second, false)
            .get(url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A broken reload keeps the certificate in force.
    std::fs::write(&key_path, "not a key").unwrap();
    assert!(node.app.reload_tls().is_err());
    assert_eq!(
        client(&second, true)
            .get(url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    node.stop().await;
}

#[tokio::test]
async fn an_idle_h2_connection_over_tls_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ca = Ca::new("idle test CA");
    let (cert, key) = ca.server_cert();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let node = TestNode::start_with_env(
        dir,
        "[demo]\nseed = false\n",
        &[
            ("IMGNODE_SERVER__TLS_CERT_FILE", cert_path.to_str().unwrap()),
            ("IMGNODE_SERVER__TLS_KEY_FILE", key_path.to_str().unwrap()),
            ("IMGNODE_SERVER__H2_IDLE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(node.app.public_addr)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The handshake and the HTTP/2 preface, then nothing but answers to pings.
    let (send, conn) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
    ended
        .expect("the server kept the idle HTTP/2 connection open")
        .expect("a clean close after GOAWAY");
    assert!(send.is_closed());
    node.stop().await;
}
