//! HTTPS for profiles with `https: true`: the same routes as plain HTTP (hyper's path; the
//! sendfile fast path cannot encrypt), behind a rustls handshake with the certificate and key
//! `metal6 serve --tls-cert/--tls-key` name.
//!
//! A client that rejects our certificate either says so with a TLS alert (`unknown_ca`,
//! `bad_certificate`, …) or, like Debian's OVMF, just closes the connection once it has our
//! certificate. Either way, after a ClientHello we accepted, when that client is a node (by
//! its source address), its timeline gets a `tls-rejected` event in phase `failed`, so an
//! operator sees "the node does not trust this server" instead of a node that silently never
//! boots. Once per node per [`REJECT_EVENT_EVERY`]: firmware retries in a loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metal6_inventory::identity::Clues;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{HttpState, source_ip};

/// A handshake (the client's first flight included) takes at most this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one `tls-rejected` event per node this often.
const REJECT_EVENT_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error(
        "{path} is readable by group or others (mode {mode:o}): the key proves this server to every node; chmod 600 it"
    )]
    KeyExposed { path: String, mode: u32 },
    #[error("the certificate and key do not make a TLS server")]
    Config(#[source] rustls::Error),
}

/// The server side of HTTPS: certificate chain (leaf first) and its key, PEM.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: p.display().to_string(), source });
    let mode = std::fs::metadata(key)
        .map_err(|source| TlsError::Read { path: key.display().to_string(), source })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyExposed { path: key.display().to_string(), mode: mode & 0o7777 });
    }
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(cert)?).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.display().to_string() });
    }
    let key_der =
        PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsError::NoKey { path: key.display().to_string() })?;
    // ring, plus DHE for firmware without elliptic curves (Debian 12's OVMF: see `ffdhe`).
    let provider = Arc::new(super::ffdhe::provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Our order, not the client's: the DHE suites come last and must stay a fallback for
    // clients without curves, not the choice of one that lists them first (DHE costs more).
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Accepts HTTPS connections until cancelled; the same limits as plain HTTP.
pub async fn run(
    listener: TcpListener,
    state: Arc<HttpState>,
    config: Arc<rustls::ServerConfig>,
    cancel: CancellationToken,
) {
    let rejected = Arc::new(Mutex::new(HashMap::<String, Instant>::new()));
    let (st, cn) = (state.clone(), cancel.clone());
    super::accept_loop(listener, &state, &cancel, "https-per-source", move |stream, peer| {
        let (state, cancel, config, rejected) = (st.clone(), cn.clone(), config.clone(), rejected.clone());
        async move {
            let handshake = async {
                // First the ClientHello alone: what fails here is not TLS, or not ours to judge.
                let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                    .await
                    .map_err(|e| (false, e))?;
                // Then the rest: the client has our certificate from here on.
                start.into_stream(config).await.map_err(|e| (true, e))
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => {
                    state.stats.update(|s| crate::stats::bump(&mut s.tls, "ok"));
                    super::serve_hyper(tls, peer, &state, &cancel, true).await;
                }
                Ok(Err((after_hello, e))) => handshake_failed(&state, peer, after_hello, &e, &rejected),
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    state.stats.update(|s| crate::stats::bump(&mut s.tls, "failed"));
                }
            }
        }
    })
    .await;
}

/// The alert a client sent when it gave up on the handshake, if it sent one.
fn client_alert(e: &std::io::Error) -> Option<rustls::AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

/// How a client gave up on our certificate: a certificate alert, or closing the connection
/// after our flight (what Debian's OVMF does when the certificate does not verify). Other
/// alerts (protocol version, no shared cipher, …) are not about trust.
fn rejection(e: &std::io::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    if let Some(alert) = client_alert(e) {
        return matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
        )
        .then(|| format!("{alert:?}"));
    }
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
    .then(|| "closed after our certificate".to_owned())
}

fn handshake_failed(
    state: &HttpState,
    peer: SocketAddr,
    after_hello: bool,
    e: &std::io::Error,
    rejected: &Mutex<HashMap<String, Instant>>,
) {
    let Some(alert) = rejection(e).filter(|_| after_hello) else {
        debug!(%peer, error = %e, after_hello, "TLS handshake failed");
        state.stats.update(|s| crate::stats::bump(&mut s.tls, "failed"));
        return;
    };
    state.stats.update(|s| crate::stats::bump(&mut s.tls, "rejected-by-client"));
    let Some((idx, _)) = state.id.identify(&Clues { source: Some(source_ip(peer)), ..Clues::default() }) else {
        debug!(%peer, ?alert, "a client that is no node rejected our certificate");
        return;
    };
    let node = &state.inv.nodes[idx].name;
    {
        // Keyed by inventory node: bounded by the inventory.
        let mut seen = rejected.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if seen.get(node).is_some_and(|t| now.duration_since(*t) < REJECT_EVENT_EVERY) {
            return;
        }
        seen.insert(node.clone(), now);
    }
    let error = format!(
        "the node rejected this server's TLS certificate ({alert}): it does not trust the CA that signed \
         `metal6 serve --tls-cert` (firmware: its HTTPS boot CA; installer: the CA built into it)"
    );
    warn!(node = %node, %peer, ?alert, "a node rejected our TLS certificate");
    let mut event = serde_json::json!({"node": node, "kind": "tls-rejected", "alert": alert, "error": error});
    // While the node boots (firmware, installer) this is why its install stops: its phase
    // says so. An installed node's own programs (curl with the system's roots, a probe) do
    // not turn a running node into a failed one: the event is kept, the phase is not.
    let installed = state.events.phase(node).is_some_and(|p| {
        !matches!(
            p.phase.as_str(),
            "waiting"
                | "firmware-dhcp"
                | "dhcp"
                | "ipxe"
                | "netboot"
                | "installer"
                | "writing-image"
                | "image-written"
                | "configured"
                | "address-conflict"
                | "failed"
        )
    });
    if !installed {
        event["phase"] = "failed".into();
    }
    state.events.record("http", &event);
}
