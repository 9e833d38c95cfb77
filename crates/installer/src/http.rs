//! HTTP to `metal6 serve`: documents, the image stream (with Range to resume) and events.
//! ureq: blocking, small, no async runtime to carry into the initramfs. Plain HTTP where the
//! provisioning network is the trust boundary (the image is verified by SHA-256 either way);
//! HTTPS for nodes whose profile says so, verified against [`CA_PATH`] only: the CA built
//! into the installer by `metal6 image build --installer-ca` and copied into every system it
//! installs. No other root is trusted.
//!
//! A URL can carry the node's token (`?token=`): every URL or HTTP error this crate prints
//! goes through [`redact`] first. The console is the BMC's, captured and shared, and the
//! token opens the node's documents, its timeline and its cluster files.

use std::io::{self, Read};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::console::say;

/// The CA this installer (and the system it installs) trusts for HTTPS.
pub const CA_PATH: &str = "/etc/metal6/ca.pem";

/// The certificates in `CA_PATH` (none when it is absent: every HTTPS fetch then fails, and
/// [`tls_hint`] says why).
fn trusted_roots() -> Vec<ureq::tls::Certificate<'static>> {
    let pem = std::fs::read(CA_PATH).unwrap_or_default();
    ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// This installer (or installed system) was built with a CA: it talks HTTPS only.
pub fn has_ca() -> bool {
    !trusted_roots().is_empty()
}

pub fn agent() -> ureq::Agent {
    // ureq's rustls-no-provider takes the process default; ring is the one built in. A second
    // install (the agent is built more than once) is refused harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(trusted_roots())))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        // A stream that stalls fails within a minute and resumes with Range from where it
        // stopped; one that keeps moving is never cut, however large the image or slow the
        // link (a whole-body limit of 40 minutes once failed slow installs).
        .timeout_per_read(Some(Duration::from_secs(60)))
        .timeout_recv_body(None)
        .http_status_as_error(false)
        .build()
        .into()
}

/// `text` — a URL, or a message that quotes one — with the value of every `token` query
/// parameter replaced by `REDACTED`.
pub fn redact(text: &str) -> String {
    const KEY: &str = "token=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(KEY) {
        let (before, after) = rest.split_at(i + KEY.len());
        out.push_str(before);
        // The value: URL-unreserved characters and escapes (tokens are hex); anything else
        // ends it, so a URL quoted in a message keeps its closing quote or colon.
        let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || "-._~%+".contains(c))).unwrap_or(after.len());
        if before[..i].ends_with(['?', '&']) {
            out.push_str("REDACTED");
        } else {
            out.push_str(&after[..end]);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A ureq error as text, redacted: some quote the URL (`bad uri: …`). A certificate error
/// says what to check.
pub fn error_text(e: &ureq::Error) -> String {
    let text = redact(&e.to_string());
    let tls = match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) => true,
        // rustls' errors during the handshake reach ureq as I/O errors.
        ureq::Error::Io(io) => io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    };
    if tls { format!("{text}: {}", tls_hint()) } else { text }
}

/// Why a TLS handshake with the server failed, from this installer's side.
pub fn tls_hint() -> String {
    if trusted_roots().is_empty() {
        format!(
            "this installer has no CA ({CA_PATH}) to verify the server: build it with \
             `metal6 image build --installer-ca CA.pem`"
        )
    } else {
        format!(
            "the server's certificate does not verify against the CA in {CA_PATH} (the CA that built this \
             installer): check `metal6 serve --tls-cert`, its address in the certificate, and the clock"
        )
    }
}

pub fn get_text(agent: &ureq::Agent, url: &str) -> Result<String> {
    let shown = redact(url);
    let mut resp = agent.get(url).call().map_err(|e| anyhow!("GET {shown}: {}", error_text(&e)))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(4 << 20)
        .read_to_string()
        .map_err(|e| anyhow!("reading {shown}: {}", error_text(&e)))?;
    if status != 200 {
        bail!("GET {shown}: HTTP {status}: {}", body.trim());
    }
    Ok(body)
}

/// The image at `url`, as a [`crate::disk::Source`]: each open is a GET from an offset.
#[derive(Debug)]
pub struct ImageSource<'a> {
    pub agent: &'a ureq::Agent,
    pub url: &'a str,
}

impl crate::disk::Source for ImageSource<'_> {
    fn open(&mut self, offset: u64) -> io::Result<(Box<dyn Read + '_>, u64)> {
        let mut req = self.agent.get(self.url);
        if offset > 0 {
            req = req.header("Range", format!("bytes={offset}-"));
        }
        let resp = req.call().map_err(|e| io::Error::other(error_text(&e)))?;
        let status = resp.status().as_u16();
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let total = match (status, offset) {
            (200, 0) => header("content-length").and_then(|l| l.parse().ok()),
            (206, _) => header("content-range").and_then(|r| content_range_total(&r, offset)),
            _ => None,
        };
        let Some(total) = total else {
            let url = redact(self.url);
            return Err(io::Error::other(format!("GET {url} from byte {offset}: unexpected HTTP {status}")));
        };
        if offset > 0 {
            say!("image stream resumed at byte {offset}");
        }
        Ok((Box::new(resp.into_body().into_reader()), total))
    }
}

/// `bytes START-END/TOTAL` → TOTAL, when START is the offset asked for.
pub fn content_range_total(v: &str, offset: u64) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    (start.parse::<u64>().ok()? == offset).then_some(())?;
    total.parse().ok()
}

/// Posts events to the node's timeline. Best effort: a lost event never stops an install,
/// but every failure is on the console.
pub struct Reporter {
    agent: ureq::Agent,
    /// With the token in its query, when there is one: never printed as is.
    url: String,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").field("url", &redact(&self.url)).finish_non_exhaustive()
    }
}

impl Reporter {
    /// `events_url` of the node; `token` when the node may not be at its inventory address.
    pub fn new(agent: ureq::Agent, events_url: &str, token: Option<&str>) -> Self {
        let url = match token {
            Some(t) => format!("{events_url}?token={t}"),
            None => events_url.to_owned(),
        };
        Reporter { agent, url }
    }

    /// Posts `event` with an id of its own (kept across the retries), so a report whose answer
    /// was lost and that is sent again is one event on the server, and one in a shared state.
    pub fn post(&self, event: &serde_json::Value) -> bool {
        let mut event = event.clone();
        if let Some(o) = event.as_object_mut() {
            o.entry("id").or_insert_with(|| event_id().into());
        }
        let body = event.to_string();
        for attempt in 1..=3 {
            match self.agent.post(&self.url).header("content-type", "application/json").send(body.as_bytes()) {
                Ok(r) if r.status().as_u16() == 202 => return true,
                Ok(r) => {
                    say!("event not accepted: HTTP {}", r.status().as_u16());
                    return false;
                }
                Err(e) => say!("posting an event failed (attempt {attempt}): {}", error_text(&e)),
            }
            std::thread::sleep(Duration::from_secs(attempt));
        }
        false
    }
}

/// 16 random hex digits (from the kernel), or the time and a counter when it has none.
fn event_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return b.iter().map(|x| format!("{x:02x}")).collect();
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("t{t:x}-{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_urls_and_messages_are_redacted() {
        let cases = [
            (
                "http://[fd00::1]:8080/v1/nodes/a/events?token=0123abcd",
                "http://[fd00::1]:8080/v1/nodes/a/events?token=REDACTED",
            ),
            ("http://h/x?a=1&token=s3cret&b=2#f", "http://h/x?a=1&token=REDACTED&b=2#f"),
            (
                "GET http://h/x?token=s3cret: bad uri: \"http://h/x?token=s3cret\")",
                "GET http://h/x?token=REDACTED: bad uri: \"http://h/x?token=REDACTED\")",
            ),
            ("http://h/x?token=", "http://h/x?token=REDACTED"),
            ("http://h/x?mytoken=1&y=token=2", "http://h/x?mytoken=1&y=token=2"),
            ("no URL here", "no URL here"),
            ("http://h/é?token=s3cret é", "http://h/é?token=REDACTED é"),
        ];
        for (text, want) in cases {
            assert_eq!(redact(text), want, "{text}");
        }
        let r = Reporter::new(agent(), "http://[fd00::1]:8080/v1/nodes/a/events", Some("s3cret"));
        let shown = format!("{r:?}");
        assert!(!shown.contains("s3cret") && shown.contains("token=REDACTED"), "{shown}");
    }

    #[test]
    fn content_range_must_start_where_we_asked() {
        assert_eq!(content_range_total("bytes 100-199/1000", 100), Some(1000));
        assert_eq!(content_range_total("bytes 0-199/1000", 100), None);
        assert_eq!(content_range_total("bytes */1000", 100), None);
        assert_eq!(content_range_total("items 100-199/1000", 100), None);
    }
}
