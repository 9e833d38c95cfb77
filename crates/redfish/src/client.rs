//! The HTTP side of Redfish: TLS policy, authentication, retries, error bodies. Everything a
//! BMC conversation needs that is not a Redfish resource.
//!
//! - TLS is verified by default, against `--ca-file` when given (BMCs ship self-signed
//!   certificates, so operators pin their CA) and the system roots otherwise. `insecure` is an
//!   explicit choice, logged once per connection.
//! - Sessions (`X-Auth-Token`) when the service has a SessionService, deleted on logout (iDRAC
//!   has few session slots); HTTP Basic when it has none (sushy-tools).
//! - Every request has a timeout. Reads are retried on connection errors, timeouts, 503 and
//!   (after logging in again) 401 — what a BMC rebooting for a firmware update answers for
//!   minutes. Writes are retried only when they cannot have been applied: the connection was
//!   never made, or the BMC said 503.
//! - Proxies from the environment are ignored: BMCs sit on a management network.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tracing::{debug, warn};

/// How to reach and authenticate to one BMC.
#[derive(Clone)]
pub struct ConnectOptions {
    /// The service root, `https://[addr]:port/redfish/v1`.
    pub url: String,
    pub username: String,
    /// Resolved from the inventory's reference at use time; never logged (see `Debug`).
    pub password: String,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub timeout: Duration,
    /// Retries of a failed request (see the module docs for which failures).
    pub retries: u32,
    /// First retry delay; doubles up to 10 s.
    pub backoff: Duration,
    /// The system's `Id` on a BMC that serves several; `None`: the first one.
    pub system: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    pub fn new(url: String, username: String, password: String) -> ConnectOptions {
        ConnectOptions {
            url,
            username,
            password,
            ca_file: None,
            insecure: false,
            timeout: Duration::from_secs(30),
            retries: 5,
            backoff: Duration::from_millis(500),
            system: None,
        }
    }

    /// The options for an inventory node's BMC (its Redfish URL, user and system), with the
    /// password its reference resolved to.
    pub fn for_bmc(b: &metal6_inventory::model::Bmc, password: String) -> ConnectOptions {
        let mut o = ConnectOptions::new(b.redfish_url(), b.username.clone(), password);
        o.system = b.system.clone();
        o
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedfishError {
    #[error("bad BMC URL {url}")]
    Url { url: String },
    #[error("cannot read the CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTPS client")]
    Client(#[source] reqwest::Error),
    #[error("{method} {path} failed")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path}: HTTP {status}{}", detail(.message_id, .message))]
    Status { method: Method, path: String, status: u16, message_id: Option<String>, message: Option<String> },
    #[error("{path}: {what}")]
    Unexpected { path: String, what: String },
    #[error("login as {user} refused (HTTP {status})")]
    Login { user: String, status: u16 },
}

fn detail(id: &Option<String>, msg: &Option<String>) -> String {
    match (id, msg) {
        (Some(i), Some(m)) => format!(" {i}: {m}"),
        (None, Some(m)) => format!(": {m}"),
        (Some(i), None) => format!(" {i}"),
        (None, None) => String::new(),
    }
}

impl RedfishError {
    /// The TLS handshake failed (certificate not verified, no common cipher): what no retry
    /// and no other credential fixes.
    pub fn is_tls(&self) -> bool {
        matches!(self, RedfishError::Transport { source, .. } if is_tls(source))
    }

    /// The Redfish/Dell message id of an error answer (`SYS011`, `RAC0679`, …), without the
    /// registry prefix.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            RedfishError::Status { message_id: Some(id), .. } => Some(id.rsplit('.').next().unwrap_or(id)),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            RedfishError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            RedfishError::Status { message: Some(m), .. } => Some(m),
            _ => None,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    /// `Location`, as a path on the BMC.
    pub location: Option<String>,
    pub etag: Option<String>,
    /// `Null` for an empty body.
    pub body: Value,
}

#[derive(Clone)]
enum Auth {
    Basic,
    Session { token: String, location: Option<String> },
}

/// The session token is a credential: `{:?}` of a `Client` or `Bmc` must not print it.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic => f.write_str("Basic"),
            Auth::Session { location, .. } => {
                f.debug_struct("Session").field("token", &"<redacted>").field("location", location).finish()
            }
        }
    }
}

/// An authenticated connection to one BMC.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `https://host:port`, no trailing slash.
    origin: String,
    /// `/redfish/v1`
    root_path: String,
    opts: ConnectOptions,
    /// Replaced when the BMC forgot the session (it restarted): see `attempts`.
    auth: std::sync::Mutex<Auth>,
    sessions_path: Option<String>,
}

impl Client {
    /// Connects: reads the anonymous service root and logs in (session if offered, else Basic).
    pub async fn connect(opts: ConnectOptions) -> Result<(Client, Value), RedfishError> {
        let url = reqwest::Url::parse(&opts.url).map_err(|_| RedfishError::Url { url: opts.url.clone() })?;
        let origin = url.origin().ascii_serialization();
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(RedfishError::Url { url: opts.url.clone() });
        }
        let root_path = url.path().trim_end_matches('/').to_owned();
        crate::init_tls();
        let mut b = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .no_proxy()
            // No redirects: reqwest would carry X-Auth-Token (and a login body) to wherever
            // a 3xx points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("metal6/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &opts.ca_file {
            let pem = std::fs::read(path).map_err(|source| RedfishError::CaFile { path: path.clone(), source })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RedfishError::CaFile {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            b = b.tls_certs_only(certs);
        }
        if opts.insecure {
            warn!(bmc = %origin, "TLS certificate verification is off (--insecure)");
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(RedfishError::Client)?;
        let mut client =
            Client { http, origin, root_path, opts, auth: std::sync::Mutex::new(Auth::Basic), sessions_path: None };
        let root = client.get_anonymous().await?;
        client.sessions_path =
            root.pointer("/Links/Sessions/@odata.id").and_then(Value::as_str).map(str::to_owned).or_else(|| {
                root.get("SessionService").map(|_| format!("{}/SessionService/Sessions", client.root_path))
            });
        let auth = client.login().await?;
        client.set_auth(auth);
        Ok((client, root))
    }

    pub fn root_path(&self) -> &str {
        &self.root_path
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    async fn get_anonymous(&self) -> Result<Value, RedfishError> {
        let path = format!("{}/", self.root_path);
        let r = self.attempts(Method::GET, &path, None, None, false).await?;
        Ok(r.body)
    }

    fn auth_now(&self) -> Auth {
        // A poisoned lock still holds a usable value: the data is replaced whole.
        self.auth.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_auth(&self, a: Auth) {
        *self.auth.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = a;
    }

    /// A new session (or Basic, when the service has no sessions).
    async fn login(&self) -> Result<Auth, RedfishError> {
        let Some(sessions) = self.sessions_path.clone() else { return Ok(Auth::Basic) };
        let body = serde_json::json!({"UserName": self.opts.username, "Password": self.opts.password});
        let resp = self
            .http
            .post(format!("{}{}", self.origin, sessions))
            .json(&body)
            .send()
            .await
            .map_err(|source| RedfishError::Transport { method: Method::POST, path: sessions.clone(), source })?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            debug!(bmc = %self.origin, "no sessions; using Basic authentication");
            return Ok(Auth::Basic);
        }
        if !status.is_success() {
            return Err(RedfishError::Login { user: self.opts.username.clone(), status: status.as_u16() });
        }
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let Some(token) = header("x-auth-token") else {
            return Err(RedfishError::Unexpected {
                path: sessions,
                what: "session created without X-Auth-Token".into(),
            });
        };
        let location = header("location").map(|l| self.path_of(&l));
        debug!(bmc = %self.origin, session = ?location, "session opened");
        Ok(Auth::Session { token, location })
    }

    /// Deletes the session (if any). Call on every exit path: iDRAC has few session slots.
    pub async fn logout(self) {
        if let Auth::Session { location: Some(loc), .. } = &self.auth_now() {
            // Not `request`: a 401 here (the session expired) must not open a new one.
            match self.once(Method::DELETE, loc).await {
                Ok(_) => debug!(bmc = %self.origin, "session closed"),
                Err(e) => warn!(bmc = %self.origin, error = %e, "could not delete the session"),
            }
        }
    }

    /// One authenticated request, no retries and no re-login.
    async fn once(&self, method: Method, path: &str) -> Result<(), RedfishError> {
        let req = self.http.request(method.clone(), format!("{}{}", self.origin, path));
        let req = match &self.auth_now() {
            Auth::Basic => req.basic_auth(&self.opts.username, Some(&self.opts.password)),
            Auth::Session { token, .. } => req.header("X-Auth-Token", token),
        };
        let resp = req.send().await.map_err(|source| RedfishError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        Err(RedfishError::Status {
            method,
            path: path.to_owned(),
            status: status.as_u16(),
            message_id: None,
            message: None,
        })
    }

    /// A `Location` or `@odata.id` as a path on this BMC.
    pub fn path_of(&self, location: &str) -> String {
        match reqwest::Url::parse(location) {
            Ok(u) => match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            },
            Err(_) => location.to_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, RedfishError> {
        Ok(self.request(Method::GET, path, None).await?.body)
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply, RedfishError> {
        self.attempts(method, path, body, None, true).await
    }

    /// One request with the retry policy of the module docs.
    async fn attempts(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        auth: bool,
    ) -> Result<Reply, RedfishError> {
        let idempotent = method == Method::GET || method == Method::DELETE;
        let mut delay = self.opts.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt > self.opts.retries;
            let mut req = self.http.request(method.clone(), format!("{}{}", self.origin, path));
            if auth {
                req = match &self.auth_now() {
                    Auth::Basic => req.basic_auth(&self.opts.username, Some(&self.opts.password)),
                    Auth::Session { token, .. } => req.header("X-Auth-Token", token),
                };
            }
            if let Some(tag) = if_match {
                req = req.header("If-Match", tag);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let result = req.send().await;
            let resp = match result {
                Ok(r) => r,
                Err(e) if !last && !is_tls(&e) && (e.is_connect() || (idempotent && e.is_timeout())) => {
                    debug!(%method, path, error = %e, attempt, "retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue;
                }
                Err(source) => return Err(RedfishError::Transport { method, path: path.to_owned(), source }),
            };
            let status = resp.status();
            // A 401 to a session that worked means the BMC forgot it (an iDRAC restarting after
            // its own update drops every session): log in again; the request was not processed,
            // so even a write may be repeated.
            if auth && status == StatusCode::UNAUTHORIZED && matches!(self.auth_now(), Auth::Session { .. }) && !last {
                debug!(%method, path, attempt, "session rejected; logging in again");
                match self.login().await {
                    Ok(a) => self.set_auth(a),
                    Err(e) => debug!(error = %e, "login failed; retrying"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
            let retry = status == StatusCode::SERVICE_UNAVAILABLE;
            if retry && !last {
                debug!(%method, path, %status, attempt, "retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
            let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let location = header("location").map(|l| self.path_of(&l));
            let etag = header("etag");
            let bytes = resp.bytes().await.map_err(|source| RedfishError::Transport {
                method: method.clone(),
                path: path.to_owned(),
                source,
            })?;
            let body = body_of(&bytes);
            if !status.is_success() {
                let (message_id, message) = extended_info(&body);
                return Err(RedfishError::Status {
                    method,
                    path: path.to_owned(),
                    status: status.as_u16(),
                    message_id,
                    message,
                });
            }
            return Ok(Reply { status, location, etag, body });
        }
    }
}

/// An answer's body: `Null` when empty, its JSON, or (an HTML error page, a plain-text 501) the
/// text itself, so error details survive.
fn body_of(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into()))
    }
}

/// A TLS failure (certificate, handshake): retrying cannot fix it.
fn is_tls(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        // io::Error::source skips the error it wraps, and hyper-util nests one io::Error in
        // another (Other(InvalidData(rustls::Error))): look inside each.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            cur = Some(inner);
            continue;
        }
        cur = err.source();
    }
    false
}

/// The first `@Message.ExtendedInfo` entry of an error body (Redfish §9.6), or its `message`.
fn extended_info(body: &Value) -> (Option<String>, Option<String>) {
    let err = body.get("error").unwrap_or(body);
    let info = err.get("@Message.ExtendedInfo").and_then(|i| i.get(0));
    let pick = |v: Option<&Value>, k: &str| v.and_then(|x| x.get(k)).and_then(Value::as_str).map(str::to_owned);
    let id = pick(info, "MessageId").or_else(|| pick(Some(err), "code"));
    let msg = pick(info, "Message")
        .or_else(|| pick(Some(err), "message"))
        .or_else(|| body.as_str().map(|s| s.trim().chars().take(200).collect()));
    (id, msg)
}

/// How answers are read, for the fuzz target `redfish_json` (`fuzz/`). Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use serde_json::Value;

    /// An answer's bytes as every caller sees them (`Reply::body`, error details).
    pub fn body_of(bytes: &[u8]) -> Value {
        super::body_of(bytes)
    }

    /// The message id and message of an error body.
    pub fn extended_info(body: &Value) -> (Option<String>, Option<String>) {
        super::extended_info(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_session_token_is_never_printed() {
        let a = Auth::Session {
            token: "s3cr3t-x-auth-token".into(),
            location: Some("/redfish/v1/SessionService/Sessions/7".into()),
        };
        let text = format!("{a:?}");
        assert!(!text.contains("s3cr3t") && text.contains("Sessions/7"), "{text}");
    }

    #[test]
    fn error_bodies_name_the_dell_message() {
        let body = json!({"error": {"@Message.ExtendedInfo": [{"Message": "Pending configuration values are already committed, unable to perform another set operation.", "MessageId": "IDRAC.2.8.SYS011"}], "code": "Base.1.12.GeneralError", "message": "A general error has occurred."}});
        let (id, msg) = extended_info(&body);
        let e = RedfishError::Status {
            method: Method::PATCH,
            path: "/x".into(),
            status: 400,
            message_id: id,
            message: msg,
        };
        assert_eq!(e.message_id(), Some("SYS011"));
        assert!(e.to_string().contains("HTTP 400 IDRAC.2.8.SYS011: Pending configuration"), "{e}");
        let (id, msg) = extended_info(&json!("Not implemented\n"));
        assert_eq!((id, msg.as_deref()), (None, Some("Not implemented")));
    }

    #[test]
    fn passwords_are_not_in_debug_output() {
        let o = ConnectOptions::new("https://[2001:db8::5]/redfish/v1".into(), "root".into(), "calvin".into());
        assert!(!format!("{o:?}").contains("calvin"));
    }
}
