//! A private PostgreSQL for tests and `make` targets: Debian's server binaries, a data
//! directory of its own, reachable only through a Unix socket in that directory (no TCP
//! listener), password authentication (SCRAM) with the password in a file, never a system
//! service. Built with the `test-pg` feature only.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the
//! Debian package creates, and the directory is handed to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The database and role the tests use.
pub const USER: &str = "metal6";
pub const DATABASE: &str = "metal6";

#[derive(Debug)]
pub struct TestPg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The file holding the role's password (for `--state-password file:…`).
    pub password_file: PathBuf,
    /// The port: names the Unix socket, and the TCP port when TLS is on.
    pub port: u16,
}

/// A server certificate and key (PEM) for [`TestPg::start_tls`].
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

const PREFIX: &str = "metal6-pg-";

/// Servers of test processes that died without stopping them (killed, or a panic that aborted):
/// stopped and their directories removed.
fn cleanup_leftovers(bin: &Path) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(path.join("owner")).ok().and_then(|p| p.trim().parse::<u32>().ok());
        let alive = match owner {
            Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            // Just created, its owner file not written yet: not a leftover unless it is old.
            None => {
                e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().unwrap_or_default().as_secs() < 60)
            }
        };
        if alive {
            continue;
        }
        let data = path.join("data");
        if data.join("postmaster.pid").exists() {
            let mut c = if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join("pg_ctl"));
                c
            } else {
                Command::new(bin.join("pg_ctl"))
            };
            let _ = c.arg("-D").arg(&data).args(["-m", "immediate", "-w", "stop"]).output();
        }
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Debian's newest PostgreSQL server binaries (`/usr/lib/postgresql/N/bin`).
pub fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

impl TestPg {
    /// Initialises and starts a server; `None` when no PostgreSQL is installed.
    pub fn start() -> Option<TestPg> {
        Self::start_inner(None)
    }

    /// [`TestPg::start`] for a test: `None` (the test skips, saying why) when no PostgreSQL
    /// is installed, which under CI (`CI` set) fails instead, since `make deps` installs it.
    #[allow(clippy::print_stderr)] // the skip says why
    pub fn start_or_skip() -> Option<TestPg> {
        let pg = Self::start();
        if pg.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is not installed: `make deps` should have installed it"
            );
            eprintln!("SKIP: PostgreSQL is not installed (run `make deps`)");
        }
        pg
    }

    /// Also listening on `[::1]:port` (loopback only) with TLS from `tls`; clients must use
    /// TLS there (`hostssl` only), the Unix socket stays plain.
    pub fn start_tls(tls: &TlsFiles, port: u16) -> Option<TestPg> {
        Self::start_inner(Some((tls, port)))
    }

    fn start_inner(tls: Option<(&TlsFiles, u16)>) -> Option<TestPg> {
        let bin = server_bin()?;
        cleanup_leftovers(&bin);
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir().expect("temporary directory");
        // Who owns this server: a later run stops it if this process died without its Drop.
        std::fs::write(dir.path().join("owner"), std::process::id().to_string()).expect("owner file");
        let password_file = dir.path().join("password");
        // Not a real secret: a private server on a socket only root and postgres can reach.
        std::fs::write(&password_file, "metal6-test-password\n").expect("password file");
        let port = tls.map_or(5432, |(_, p)| p);
        let pg = TestPg { dir, bin, password_file, port };
        if let Some((files, _)) = tls {
            for (from, to) in [(&files.cert, "server.crt"), (&files.key, "server.key")] {
                std::fs::copy(from, pg.dir.path().join(to)).expect("copy the TLS files");
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(pg.dir.path().join("server.key"), std::fs::Permissions::from_mode(0o600))
                .expect("key mode");
        }
        if is_root() {
            let ok = Command::new("chown").arg("-R").arg("postgres:postgres").arg(pg.dir.path()).status();
            assert!(ok.is_ok_and(|s| s.success()), "chown the PostgreSQL directory to postgres");
        }
        let data = pg.data();
        pg.run_ok(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                USER,
                "--auth=scram-sha-256",
                "--pwfile",
                pg.password_file.to_str().expect("utf-8 path"),
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        let mut conf = format!(
            "unix_socket_directories = '{}'\nport = {port}\nfsync = on\n\
             synchronous_commit = on\nmax_connections = 50\nshared_buffers = 64MB\n",
            pg.dir.path().display()
        );
        if tls.is_some() {
            let d = pg.dir.path().display();
            conf.push_str(&format!(
                "listen_addresses = '::1'\nssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\n"
            ));
            // TCP only with TLS: a plain connection over TCP is refused by the server too.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all scram-sha-256\nhostssl all all ::1/128 scram-sha-256\nhostnossl all all all reject\n",
            )
            .expect("pg_hba.conf");
        } else {
            conf.push_str("listen_addresses = ''\n");
        }
        append(&data.join("postgresql.conf"), &conf);
        pg.start_server();
        let out = pg.psql("postgres", &format!("CREATE DATABASE {DATABASE} OWNER {USER}"));
        assert!(out.status.success(), "create database: {}", String::from_utf8_lossy(&out.stderr));
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The socket directory, which is also the server's `host`.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The state URL: the socket directory as host, no password (it is in [`Self::password_file`]).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@/{DATABASE}?host={}&port={}&sslmode=disable", self.dir.path().display(), self.port)
    }

    /// `--state-password` for [`Self::url`].
    pub fn password_ref(&self) -> String {
        format!("file:{}", self.password_file.display())
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run_ok(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.command(tool).args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start_server(&self) {
        let log = self.dir.path().join("server.log");
        self.run_ok(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// `pg_ctl stop -m MODE` (`fast`: clean; `immediate`: like a crash, recovery at next start).
    pub fn stop_server(&self, mode: &str) {
        self.run_ok("pg_ctl", &["-D", self.data().to_str().expect("utf-8"), "-m", mode, "-w", "stop"]);
    }

    /// Runs SQL as the test role through Debian's `psql` (password from the file).
    pub fn psql(&self, db: &str, sql: &str) -> Output {
        let password = std::fs::read_to_string(&self.password_file).unwrap_or_default();
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db, "-c", sql])
            .env("PGPASSWORD", password.trim())
            .output()
            .expect("run psql")
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("postgresql.conf");
    f.write_all(text.as_bytes()).expect("append to postgresql.conf");
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", self.data().to_str().unwrap_or_default(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
