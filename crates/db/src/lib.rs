//! Shared state for several provisioning hosts, in PostgreSQL.
//!
//! One host keeps its state in embedded stores (the lease journal, the event log, apply's
//! SQLite); several hosts serving one fleet share it here instead, through an existing engine
//! rather than a replication scheme of our own (docs/scale-out.md). This crate owns:
//!
//! - the connection: a `postgres://` URL that never holds the password (it is given by
//!   reference, `env:NAME` or `file:PATH`), and TLS verified by default (`sslmode=verify-full`,
//!   the server's name checked against `sslrootcert` or the system's roots); only a Unix-socket
//!   host, which never leaves the machine, may say `sslmode=disable`;
//! - the schema, versioned and applied at start ([`migrate`]);
//! - the tables `metal6 serve` shares ([`leases`]: bindings, removals, node events, inventory
//!   generations), with the statements that keep them right under concurrent servers.
//!
//! It must not know about sockets or DHCPv6 messages: callers hand it bindings and events.
//! Blocking by design (rust-postgres' synchronous client): its callers are threads.

pub mod leases;
pub mod migrate;
#[cfg(any(test, feature = "test-pg"))]
pub mod testpg;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use metal6_inventory::ident::SecretRef;

pub use postgres::Client;

/// How long a connection attempt may take (each host of a multi-host URL gets this).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the state URL {url} is not a PostgreSQL URL: {why}")]
    Url { url: String, why: String },
    #[error(
        "the state URL holds a password: give it by reference instead (--state-password env:NAME or file:PATH), \
         so it is never on a command line or in a log"
    )]
    PasswordInUrl,
    #[error(
        "sslmode=disable is accepted only for a Unix-socket host (host=/path): anything else crosses a network, \
         and TLS to the database is verified by default"
    )]
    PlainOverNetwork,
    #[error("cannot read the database password {reference}")]
    Password {
        reference: String,
        #[source]
        source: metal6_inventory::ident::SecretError,
    },
    #[error("cannot read the database CA file {path}")]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the database CA file {path} holds no usable certificate")]
    CaEmpty { path: PathBuf },
    #[error("cannot connect to the state database {target}")]
    Connect {
        target: String,
        #[source]
        source: postgres::Error,
    },
    #[error("{what} failed in the state database")]
    Query {
        what: &'static str,
        #[source]
        source: postgres::Error,
    },
    #[error(
        "the state database has schema version {found}, newer than this metal6 knows ({known}): upgrade metal6 \
         before pointing it at this database"
    )]
    SchemaTooNew { found: i32, known: i32 },
    #[error("the state database has schema version {found}, this metal6 needs {known}: run `metal6 db migrate`")]
    SchemaTooOld { found: i32, known: i32 },
    #[error(
        "another metal6 connected to the state database uses the name {name}: give each server its own \
         --server-name (two with one name would overwrite each other's bindings)"
    )]
    NameTaken { name: String },
}

impl DbError {
    /// A deadlock or serialization failure: the transaction may simply be run again.
    pub fn is_retryable(&self) -> bool {
        let DbError::Query { source, .. } = self else { return false };
        matches!(
            source.code(),
            Some(c) if *c == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                || *c == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
        )
    }
}

/// An error and its causes on one line (`a: b: c`), for logs and messages: `%e` alone prints
/// only the outermost message and hides why a statement failed.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Shorthand for a failed statement, named after what it was for.
pub(crate) fn query(what: &'static str) -> impl FnOnce(postgres::Error) -> DbError {
    move |source| DbError::Query { what, source }
}

/// Whether and how TLS is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Verified TLS: the server's certificate chains to `ca` (PEM; the system's roots when
    /// `None`) and names the host we connect to.
    VerifyFull { ca: Option<PathBuf> },
    /// No TLS: only for Unix-socket hosts.
    Disable,
}

/// Where the shared state lives and how to reach it. Holds no secret, only a reference to it,
/// so it may be printed.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// The URL as given, for messages (it holds no password: refused at parse time).
    pub url: String,
    pg: postgres::Config,
    pub tls: Tls,
    pub password: Option<SecretRef>,
}

impl DbConfig {
    /// Parses a `postgres://user@host:port/dbname?…` (or `postgresql://`) URL. Beyond what
    /// libpq's URLs take, `sslmode` is `verify-full` (the default) or `disable`, and
    /// `sslrootcert=PATH` names the CA for the server's certificate.
    pub fn parse(url: &str, password: Option<SecretRef>) -> Result<DbConfig, DbError> {
        let bad = |why: &str| DbError::Url { url: redacted(url), why: why.to_owned() };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad("it must start with postgres://"));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl = "verify-full".to_owned();
        let mut ca = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => ssl = v.to_owned(),
                "sslrootcert" => ca = Some(PathBuf::from(v)),
                "password" => return Err(DbError::PasswordInUrl),
                _ => rest.push(pair),
            }
        }
        let rebuilt = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
        let mut pg = postgres::Config::from_str(&rebuilt).map_err(|e| bad(&e.to_string()))?;
        if pg.get_password().is_some() {
            return Err(DbError::PasswordInUrl);
        }
        if pg.get_hosts().is_empty() {
            return Err(bad("it names no host (a host name, an address in brackets, or host=/socket/dir)"));
        }
        let local_only = pg.get_hosts().iter().all(|h| matches!(h, postgres::config::Host::Unix(_)));
        let tls = match ssl.as_str() {
            "verify-full" => Tls::VerifyFull { ca },
            "disable" if local_only => Tls::Disable,
            "disable" => return Err(DbError::PlainOverNetwork),
            other => {
                return Err(bad(&format!(
                    "sslmode={other} is not supported: verify-full (the default) or disable (Unix sockets only)"
                )));
            }
        };
        pg.ssl_mode(match tls {
            Tls::VerifyFull { .. } => postgres::config::SslMode::Require,
            Tls::Disable => postgres::config::SslMode::Disable,
        });
        pg.connect_timeout(CONNECT_TIMEOUT);
        // A database that goes silent (a partition, a host gone) is noticed in seconds, not
        // after TCP's retransmissions (~15 min): the servers then go degraded instead of
        // blocking; a statement that hangs is cut.
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(5));
        pg.keepalives_interval(Duration::from_secs(2));
        pg.keepalives_retries(3);
        pg.tcp_user_timeout(Duration::from_secs(10));
        if pg.get_options().is_none() {
            pg.options("-c statement_timeout=15000 -c lock_timeout=10000");
        }
        if pg.get_application_name().is_none() {
            pg.application_name("metal6");
        }
        Ok(DbConfig { url: url.to_owned(), pg, tls, password })
    }

    /// A new connection, with the password resolved now (a rotated file is read again).
    pub fn connect(&self) -> Result<Client, DbError> {
        let mut pg = self.pg.clone();
        if let Some(r) = &self.password {
            let pw = r.resolve().map_err(|source| DbError::Password { reference: r.to_string(), source })?;
            pg.password(pw);
        }
        let target = self.url.clone();
        let connect_err = |source| DbError::Connect { target, source };
        match &self.tls {
            Tls::Disable => pg.connect(postgres::NoTls).map_err(connect_err),
            Tls::VerifyFull { ca } => {
                let config = client_tls(ca.as_ref())?;
                pg.connect(tokio_postgres_rustls::MakeRustlsConnect::new(config)).map_err(connect_err)
            }
        }
    }

    /// The server a message should name (the URL: it holds no secret).
    pub fn target(&self) -> &str {
        &self.url
    }
}

/// `url` with any password in it replaced, for messages about a URL that did not parse.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            format!("{}:***@{host}", user.split(':').next().unwrap_or_default())
        }
        _ => authority.to_owned(),
    };
    let tail = match tail.find("password=") {
        Some(i) => format!("{}password=***", &tail[..i]),
        None => tail.to_owned(),
    };
    if scheme.is_empty() { format!("{authority}{tail}") } else { format!("{scheme}://{authority}{tail}") }
}

/// A rustls client configuration that verifies the server against `ca` or the system's roots.
fn client_tls(ca: Option<&PathBuf>) -> Result<rustls::ClientConfig, DbError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| DbError::Ca { path: path.clone(), source })?;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(DbError::CaEmpty { path: path.clone() });
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| DbError::CaEmpty { path: PathBuf::from("(TLS versions)") })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_secrets_and_with_verified_tls_by_default() {
        let c = DbConfig::parse("postgres://metal6@db.example.net:5432/metal6", None).expect("parse");
        assert_eq!(c.tls, Tls::VerifyFull { ca: None });
        let c = DbConfig::parse("postgres://metal6@[2001:db8::5]/metal6?sslrootcert=/etc/metal6/db-ca.pem", None)
            .expect("parse");
        assert_eq!(c.tls, Tls::VerifyFull { ca: Some("/etc/metal6/db-ca.pem".into()) });
        let c = DbConfig::parse("postgres://metal6@/metal6?host=/run/postgresql&sslmode=disable", None).expect("unix");
        assert_eq!(c.tls, Tls::Disable);
    }

    #[test]
    fn a_password_in_the_url_or_plain_text_over_a_network_is_refused() {
        for url in ["postgres://metal6:hunter2@db/metal6", "postgres://metal6@db/metal6?password=hunter2"] {
            let e = DbConfig::parse(url, None).expect_err("password");
            assert!(matches!(e, DbError::PasswordInUrl), "{url}: {e}");
            assert!(!e.to_string().contains("hunter2"), "the message repeats the secret: {e}");
        }
        let e = DbConfig::parse("postgres://metal6@db/metal6?sslmode=disable", None).expect_err("plain");
        assert!(matches!(e, DbError::PlainOverNetwork), "{e}");
        let e = DbConfig::parse("postgres://metal6@db/metal6?sslmode=prefer", None).expect_err("prefer");
        assert!(e.to_string().contains("verify-full"), "{e}");
        let e = DbConfig::parse("mysql://metal6@db/metal6", None).expect_err("scheme");
        assert!(e.to_string().contains("postgres://"), "{e}");
        // A URL that does not parse is named without its password.
        let e = DbConfig::parse("postgres://metal6:hunter2@db:notaport/metal6", None).expect_err("port");
        assert!(!e.to_string().contains("hunter2") && e.to_string().contains("metal6:***@db"), "{e}");
        let e = DbConfig::parse("mysql://metal6:hunter2@db/metal6?password=hunter2", None).expect_err("scheme");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
