//! The HTTP service of `metal6 serve` against curl over IPv6, in namespaces: artifacts with
//! HEAD, Range, validators and conditional GET; traversal refused in every spelling; events
//! accepted only from the node itself; timeline, node list and metrics.

mod common;

use std::process::Output;

use common::{Netns, Server, lab_link, root};

const NODE1_MAC: &str = "52:54:00:6d:00:01";
const BASE: &str = "http://[fd00:6d:1::1]:8080";

struct Fixture {
    _srv: Netns,
    cli: Netns,
    server: Server,
    _www: tempfile::TempDir,
}

/// Server with an artifact root holding a 1 MiB file of known bytes, a symlink pointing out
/// of the root, and a client namespace with lab-node-1's address (fd00:6d:1::100) and a
/// stranger's (fd00:6d:1::200).
fn fixture() -> Fixture {
    let (srv, cli) = lab_link(NODE1_MAC);
    cli.exec("ip -6 addr add fd00:6d:1::100/64 dev m6c0 nodad && ip -6 addr add fd00:6d:1::200/64 dev m6c0 nodad");
    let www = tempfile::tempdir().expect("www");
    std::fs::create_dir_all(www.path().join("boot")).expect("boot dir");
    let data: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(www.path().join("boot/installer.efi"), &data).expect("file");
    std::os::unix::fs::symlink("/etc/passwd", www.path().join("boot/passwd")).expect("symlink");
    let arg = www.path().to_str().expect("utf-8").to_owned();
    let server = Server::start(&srv, &root().join("inventory/lab.yaml"), "m6s0", &["--no-ra", "--artifacts", &arg]);
    Fixture { _srv: srv, cli, server, _www: www }
}

fn curl(ns: &Netns, args: &str) -> Output {
    ns.try_exec(&format!("curl -sS -g --max-time 10 {args}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `curl -o /dev/null -w '%{http_code} %{size_download}'`
fn status(ns: &Netns, args: &str) -> (u16, u64) {
    let o = curl(ns, &format!("-o /dev/null -w '%{{http_code}} %{{size_download}}' {args}"));
    let t = stdout(&o);
    let mut it = t.split_whitespace();
    (it.next().and_then(|s| s.parse().ok()).unwrap_or(0), it.next().and_then(|s| s.parse().ok()).unwrap_or(0))
}

#[test]
fn artifacts_head_range_and_conditional_get() {
    require_netns!();
    require_tool!("curl");
    let f = fixture();
    let url = format!("{BASE}/boot/installer.efi");
    let head = curl(&f.cli, &format!("-I {url}"));
    let h = stdout(&head).to_ascii_lowercase();
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        h.contains("content-length: 1048576")
            && h.contains("accept-ranges: bytes")
            && h.contains("content-type: application/efi"),
        "{h}"
    );
    let etag = h.lines().find_map(|l| l.strip_prefix("etag: ")).expect("etag").trim().to_owned();
    let lm = stdout(&head)
        .lines()
        .find_map(|l| l.strip_prefix("last-modified: ").or_else(|| l.strip_prefix("Last-Modified: ")))
        .expect("last-modified")
        .trim()
        .to_owned();
    // The whole file, byte for byte.
    let body = f.cli.try_exec(&format!("curl -sS -g {url} | sha256sum"));
    let want = common::sh(&format!("sha256sum {}", f._www.path().join("boot/installer.efi").display()));
    assert_eq!(
        stdout(&body).split_whitespace().next(),
        String::from_utf8_lossy(&want.stdout).split_whitespace().next()
    );
    // Ranges.
    let part = curl(&f.cli, &format!("-D - -r 1000-1009 {url} -o /dev/null"));
    assert!(
        stdout(&part).contains("206")
            && stdout(&part).to_ascii_lowercase().contains("content-range: bytes 1000-1009/1048576"),
        "{}",
        stdout(&part)
    );
    let bytes = f.cli.try_exec(&format!("curl -sS -g -r 1000-1009 {url} | od -An -tu1"));
    let got: Vec<u32> = stdout(&bytes).split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert_eq!(got, (1000..1010).map(|i| i % 251).collect::<Vec<u32>>());
    assert_eq!(status(&f.cli, &format!("-r -100 {url}")), (206, 100));
    assert_eq!(status(&f.cli, &format!("-r 2000000- {url}")).0, 416);
    // Conditional requests.
    assert_eq!(status(&f.cli, &format!("-H 'If-None-Match: {etag}' {url}")), (304, 0));
    assert_eq!(status(&f.cli, &format!("-H 'If-Modified-Since: {lm}' {url}")), (304, 0));
    assert_eq!(status(&f.cli, &format!("-H 'If-None-Match: \"stale\"' {url}")), (200, 1024 * 1024));
    // If-Range with a stale validator: the whole file instead of the part.
    assert_eq!(status(&f.cli, &format!("-r 0-9 -H 'If-Range: \"stale\"' {url}")), (200, 1024 * 1024));
    assert_eq!(status(&f.cli, &format!("-r 0-9 -H 'If-Range: {etag}' {url}")), (206, 10));
}

/// Artifact fetches are answered by the sendfile fast path and everything else by hyper; one
/// keep-alive connection moves from the first to the second (curl reuses a connection for the
/// URLs of one invocation: `num_connects` is 0 after the first).
#[test]
fn one_connection_carries_artifacts_and_the_api() {
    require_netns!();
    require_tool!("curl");
    let f = fixture();
    let file = format!("{BASE}/boot/installer.efi");
    let api = format!("{BASE}/v1/nodes");
    let o = curl(
        &f.cli,
        &format!(
            "-o /dev/null -o /dev/null -o /dev/null -o /dev/null \
             -w '%{{num_connects}} %{{http_code}} %{{size_download}}\n' {file} {file} {api} {file}"
        ),
    );
    let lines: Vec<Vec<u64>> =
        stdout(&o).lines().map(|l| l.split_whitespace().filter_map(|x| x.parse().ok()).collect()).collect();
    assert_eq!(lines.len(), 4, "{}", stdout(&o));
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l[0], u64::from(i == 0), "request {i} must reuse the connection: {lines:?}");
        assert_eq!(l[1], 200, "request {i}: {lines:?}");
    }
    assert_eq!((lines[0][2], lines[1][2], lines[3][2]), (1 << 20, 1 << 20, 1 << 20), "{lines:?}");
    assert!(lines[2][2] > 10, "the node list: {lines:?}");
    // HTTP/1.0 and `Connection: close` get the whole file and a closed connection.
    assert_eq!(status(&f.cli, &format!("--http1.0 {file}")), (200, 1 << 20));
    let h = stdout(&curl(&f.cli, &format!("-H 'Connection: close' -D - -o /dev/null {file}"))).to_ascii_lowercase();
    assert!(h.contains("connection: close") && h.contains("content-length: 1048576"), "{h}");
    // A request line that does not parse is a 400, not a hang or a dropped connection.
    assert_eq!(status(&f.cli, &format!("-X 'BAD METHOD' {file}")).0, 400);
    // Which path sent what: the two first fetches, HTTP/1.0 and `close` went by sendfile; the
    // fetch after the API request, on the connection hyper took over, was streamed by hyper.
    let metrics = stdout(&curl(&f.cli, &format!("{BASE}/metrics")));
    let metric = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("");
    assert_eq!(metric("metal6_http_sendfile_bytes_total "), (4u64 << 20).to_string(), "{metrics}");
    assert_eq!(metric("metal6_http_sent_bytes_total "), (5u64 << 20).to_string(), "{metrics}");
}

#[test]
fn traversal_is_refused_in_every_spelling() {
    require_netns!();
    require_tool!("curl");
    let f = fixture();
    for path in [
        "/../../../etc/passwd",
        "/boot/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/boot/%2E%2E/%2E%2E/etc/passwd",
        "/boot/..%2f..%2fetc/passwd",
        "/boot/..%5c..%5cetc%5cpasswd",
        "//etc/passwd",
        "/boot/passwd",
        "/boot/installer.efi%00.txt",
    ] {
        // --path-as-is: curl must not normalise the dots away before sending.
        let (code, size) = status(&f.cli, &format!("--path-as-is '{BASE}{path}'"));
        assert_eq!(code, 404, "{path} must be refused");
        assert!(size < 100, "{path} leaked {size} bytes");
    }
    assert_eq!(status(&f.cli, &format!("{BASE}/boot/installer.efi")).0, 200, "the real file still works");
}

#[test]
fn events_only_from_the_node_itself_and_the_timeline() {
    require_netns!();
    require_tool!("curl");
    let f = fixture();
    let post = |from: &str, node: &str, body: &str, query: &str| {
        status(&f.cli, &format!("--interface {from} -X POST -H 'Content-Type: application/json' -d '{body}' '{BASE}/v1/nodes/{node}/events{query}'")).0
    };
    let ev = r#"{"kind":"progress","phase":"writing-image","progress":0.25}"#;
    assert_eq!(post("fd00:6d:1::100", "lab-node-1", ev, ""), 202, "from the node's own address");
    assert_eq!(post("fd00:6d:1::200", "lab-node-1", ev, ""), 403, "a stranger");
    assert_eq!(post("fd00:6d:1::100", "lab-node-2", ev, ""), 403, "another node's address");
    assert_eq!(
        post("fd00:6d:1::200", "lab-node-1", ev, "?token=0123456789abcdef0123456789abcdef"),
        403,
        "a wrong token"
    );
    assert_eq!(post("fd00:6d:1::100", "lab-node-1", "[1,2]", ""), 400, "not an object");
    assert_eq!(post("fd00:6d:1::100", "lab-node-1", r#"{"progress":1}"#, ""), 400, "no kind or phase");
    assert_eq!(post("fd00:6d:1::100", "no-such-node", ev, ""), 404);
    let big = format!(r#"{{"kind":"x","pad":"{}"}}"#, "a".repeat(70_000));
    std::fs::write(f.server.state.path().join("big.json"), big).expect("write");
    let (code, _) = status(
        &f.cli,
        &format!(
            "--interface fd00:6d:1::100 -X POST --data-binary @{}/big.json {BASE}/v1/nodes/lab-node-1/events",
            f.server.state.path().display()
        ),
    );
    assert_eq!(code, 413, "bounded event size");
    let timeline: serde_json::Value =
        serde_json::from_str(&stdout(&curl(&f.cli, &format!("{BASE}/v1/nodes/lab-node-1/timeline"))))
            .expect("timeline JSON");
    let events = timeline.as_array().expect("array");
    assert_eq!(events.len(), 1, "{timeline}");
    assert_eq!(events[0]["phase"], "writing-image");
    assert_eq!(events[0]["source"], "node");
    let nodes: serde_json::Value =
        serde_json::from_str(&stdout(&curl(&f.cli, &format!("{BASE}/v1/nodes")))).expect("nodes JSON");
    assert_eq!(nodes[0]["name"], "lab-node-1");
    assert_eq!(nodes[0]["phase"], "writing-image");
    assert_eq!(nodes[1]["phase"], "waiting");
    assert_eq!(status(&f.cli, &format!("{BASE}/v1/nodes/nobody/timeline")).0, 404);
}

#[test]
fn metrics_in_prometheus_text_format() {
    require_netns!();
    require_tool!("curl");
    let f = fixture();
    let (ok, _, err) = common::probe(&f.cli, &format!("--mac {NODE1_MAC}"));
    assert!(ok, "{err}");
    let _ = status(&f.cli, &format!("{BASE}/boot/installer.efi"));
    let _ = status(&f.cli, &format!("{BASE}/missing"));
    let m = common::wait_for("metrics to show the exchange", std::time::Duration::from_secs(5), || {
        let t = stdout(&curl(&f.cli, &format!("{BASE}/metrics")));
        t.contains("metal6_dhcpv6_sent_total{type=\"reply\"} 1").then_some(t)
    });
    for line in [
        "# TYPE metal6_dhcpv6_received_total counter",
        "metal6_dhcpv6_received_total{type=\"solicit\"} 1",
        "metal6_http_responses_total{class=\"4xx\"} 1",
        "metal6_nodes{phase=\"waiting\"} 1",
        "metal6_nodes{phase=\"dhcp\"} 1",
    ] {
        assert!(m.contains(line), "missing `{line}` in:\n{m}");
    }
    let bytes: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("metal6_http_sent_bytes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(bytes, 1024 * 1024);
}

#[test]
fn node_documents_only_to_their_node() {
    require_netns!();
    require_tool!("curl");
    let f = fixture();
    let get = |from: &str, node: &str, doc: &str, query: &str| {
        let o =
            curl(&f.cli, &format!("--interface {from} -w '\\n%{{http_code}}' '{BASE}/v1/nodes/{node}/{doc}{query}'"));
        let t = stdout(&o);
        let (body, code) = t.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_owned())
    };
    let (code, ipxe) = get("fd00:6d:1::100", "lab-node-1", "ipxe", "");
    assert_eq!(code, 200, "{ipxe}");
    assert!(ipxe.starts_with("#!ipxe") && ipxe.contains("metal6.node=lab-node-1"), "{ipxe}");
    assert!(!ipxe.contains("token"), "no token on a kernel command line: {ipxe}");
    let (code, plan) = get("fd00:6d:1::100", "lab-node-1", "plan.json", "");
    assert_eq!(code, 200);
    let plan: serde_json::Value = serde_json::from_str(&plan).expect("plan JSON");
    assert_eq!(plan["network"]["address"], "fd00:6d:1::100");
    let token = plan["report"]["token"].as_str().expect("token in the plan").to_owned();
    let (code, unit) = get("fd00:6d:1::100", "lab-node-1", "network", "");
    assert_eq!(code, 200);
    assert!(unit.contains("Address=fd00:6d:1::100/64"), "{unit}");
    // Anyone else: 403, and no secret in the answer.
    for (from, node, doc) in [
        ("fd00:6d:1::200", "lab-node-1", "ipxe"),
        ("fd00:6d:1::100", "lab-node-2", "plan.json"),
        ("fd00:6d:1::200", "lab-node-1", "network"),
    ] {
        let (code, body) = get(from, node, doc, "");
        assert_eq!(code, 403, "{from} {node} {doc}");
        assert!(!body.contains(&token));
    }
    // A second plan within a second: 429, the token stays current.
    assert_eq!(get("fd00:6d:1::100", "lab-node-1", "plan.json", "").0, 429);
    // With the node's token, from elsewhere (the installer before its address is up).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(get("fd00:6d:1::200", "lab-node-1", "plan.json", &format!("?token={token}")).0, 200);
    assert_eq!(
        get("fd00:6d:1::200", "lab-node-2", "plan.json", &format!("?token={token}")).0,
        403,
        "a token is per node"
    );
}

/// Every plan starts an install with a fresh token; a host that spoofs the node's address and
/// takes a plan rotates it, so the real node's next request carries a stale token: refused and
/// recorded as an identity conflict naming where the current install went.
#[test]
fn a_second_claimant_of_a_node_is_detected() {
    require_netns!();
    require_tool!("curl");
    let f = fixture();
    let plan_token = || {
        let o = curl(&f.cli, &format!("--interface fd00:6d:1::100 {BASE}/v1/nodes/lab-node-1/plan.json"));
        let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
        plan["report"]["token"].as_str().expect("token").to_owned()
    };
    let post = |from: &str, token: &str| {
        status(
            &f.cli,
            &format!(
                "--interface {from} -X POST -d '{{\"kind\":\"progress\",\"phase\":\"installer\"}}' \
                 '{BASE}/v1/nodes/lab-node-1/events?token={token}'"
            ),
        )
        .0
    };
    let real = plan_token();
    // One plan a second per node: the stranger's comes after that.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let stranger = plan_token();
    assert_ne!(real, stranger, "a new install, a new token");
    assert_eq!(post("fd00:6d:1::200", &stranger), 202, "the current token works from anywhere");
    assert_eq!(post("fd00:6d:1::100", &real), 403, "a stale token is refused even from the node's address");
    let events = f.server.events();
    let conflict = events.iter().find(|e| e["kind"] == "identity-conflict").expect("identity-conflict event");
    assert_eq!(conflict["presented_install"], 1);
    assert_eq!(conflict["current_install"], 2);
    assert_eq!(conflict["current_issued_to"], "fd00:6d:1::100");
    assert_eq!(events.iter().filter(|e| e["kind"] == "token-issued").count(), 2);
    assert!(f.server.log_text().contains("two hosts claim it"));
}

#[test]
fn metal6_status_shows_phases() {
    require_netns!();
    require_tool!("curl");
    let f = fixture();
    let ev = r#"{"kind":"progress","phase":"writing-image","progress":0.5}"#;
    let (code, _) =
        status(&f.cli, &format!("--interface fd00:6d:1::100 -X POST -d '{ev}' {BASE}/v1/nodes/lab-node-1/events"));
    assert_eq!(code, 202);
    let m6 = common::metal6();
    let inv = root().join("inventory/lab.yaml");
    let o = f.cli.try_exec(&format!("{} status -i {} -o json", m6.display(), inv.display()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let nodes: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(nodes[0]["phase"], "writing-image");
    assert_eq!(nodes[1]["phase"], "waiting");
    let o = f.cli.try_exec(&format!("{} status --server {BASE} --watch --count 2 --interval 0.2", m6.display()));
    let table = stdout(&o);
    assert_eq!(table.matches("NODE").count(), 2, "two refreshes: {table}");
    let row = table.lines().find(|l| l.starts_with("lab-node-1")).expect("row");
    assert!(row.contains("fd00:6d:1::100") && row.contains("writing-image"), "{row}");
    // No server: a clear error, exit 2.
    let o = f.cli.try_exec(&format!("{} status --server http://[fd00:6d:1::99]:1", m6.display()));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("GET http://[fd00:6d:1::99]:1/v1/nodes"));
}

/// lab.yaml with HTTPS on 8443 and lab-node-1's profile saying `https: true`.
fn https_inventory(dir: &std::path::Path) -> std::path::PathBuf {
    let src = std::fs::read_to_string(root().join("inventory/lab.yaml")).expect("lab");
    let src = src.replace("    tftp_port: 69\n", "    tftp_port: 69\n    https_port: 8443\n");
    let src =
        src.replace("    boot: uefi-http\n    image: lab\n", "    boot: uefi-http\n    https: true\n    image: lab\n");
    assert!(src.contains("https_port") && src.contains("https: true"));
    let p = dir.join("https.yaml");
    std::fs::write(&p, src).expect("inventory");
    p
}

/// HTTPS as the nodes meet it, against curl (OpenSSL) as the client: artifacts and documents
/// over TLS verified by the CA; the DHE-only handshake Debian's OVMF needs (no elliptic
/// curves) negotiated with ffdhe2048; an HTTPS node's documents refused over plain HTTP; a
/// client with another CA refused and the refusal in the node's timeline; a key readable by
/// others, or an HTTPS inventory without a certificate, refused at start.
#[test]
fn https_for_nodes_whose_profile_says_so() {
    require_netns!();
    require_tool!("curl");
    require_tool!("openssl");
    let (srv, cli) = lab_link(NODE1_MAC);
    cli.exec("ip -6 addr add fd00:6d:1::100/64 dev m6c0 nodad");
    let tls = tempfile::tempdir().expect("tls");
    common::tls_rsa_ca_and_leaf(tls.path(), &["fd00:6d:1::1"]);
    let inv = https_inventory(tls.path());
    let www = tempfile::tempdir().expect("www");
    std::fs::create_dir_all(www.path().join("boot")).expect("boot dir");
    std::fs::write(www.path().join("boot/installer.efi"), vec![7u8; 300_000]).expect("file");
    let (t, w) = (tls.path().display().to_string(), www.path().display().to_string());
    let (cert, key) = (format!("{t}/cert.pem"), format!("{t}/key.pem"));
    let args = ["--no-ra", "--artifacts", &w, "--tls-cert", &cert, "--tls-key", &key];
    let server = Server::start(&srv, &inv, "m6s0", &args);
    let https = "https://[fd00:6d:1::1]:8443";
    let ca = format!("--cacert {t}/ca.pem");

    // The boot file, verified by the CA, as the client negotiates it by default (ECDHE).
    let (code, bytes) = status(&cli, &format!("{ca} {https}/boot/installer.efi"));
    assert_eq!((code, bytes), (200, 300_000), "{}", server.log_text());
    // What OVMF offers: TLS 1.2, DHE_RSA suites only, no curves.
    let o = curl(
        &cli,
        &format!("-v {ca} --tls-max 1.2 --ciphers DHE-RSA-AES128-GCM-SHA256 -o /dev/null {https}/boot/installer.efi"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("DHE-RSA-AES128-GCM-SHA256"), "DHE handshake: {err}");
    // A client with curves that lists DHE first still gets ECDHE: the server's order wins.
    let o = curl(
        &cli,
        &format!(
            "-v {ca} --tls-max 1.2 --ciphers DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256 -o /dev/null \
             {https}/boot/installer.efi"
        ),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("/ ECDHE-RSA-AES128-GCM-SHA256"), "ECDHE preferred: {err}");
    // The node's documents over HTTPS, from its address; not over plain HTTP.
    let (code, _) = status(&cli, &format!("{ca} --interface fd00:6d:1::100 {https}/v1/nodes/lab-node-1/plan.json"));
    assert_eq!(code, 200);
    let o = curl(&cli, &format!("--interface fd00:6d:1::100 {BASE}/v1/nodes/lab-node-1/plan.json"));
    assert!(stdout(&o).contains("HTTPS node"), "plain HTTP refused: {}", stdout(&o));
    // lab-node-2 (no https) is served over plain HTTP as before.
    let (code, _) = status(&cli, &format!("{BASE}/v1/nodes/lab-node-2/timeline"));
    assert_eq!(code, 200);

    // A client that trusts another CA refuses us: its node's timeline says so.
    let o = curl(&cli, &format!("--cacert {t}/other-ca.pem --interface fd00:6d:1::100 {https}/boot/installer.efi"));
    assert!(!o.status.success(), "a wrong CA must fail");
    let rejected = common::wait_for("the tls-rejected event", std::time::Duration::from_secs(10), || {
        server.events().into_iter().find(|e| e["kind"] == "tls-rejected")
    });
    assert_eq!(rejected["node"], "lab-node-1");
    assert_eq!(rejected["phase"], "failed");
    assert!(rejected["error"].as_str().unwrap_or("").contains("does not trust"), "{rejected}");
    let stats = common::wait_for("TLS counters", std::time::Duration::from_secs(10), || {
        let s = server.stats();
        (s["tls"]["ok"].as_u64().unwrap_or(0) >= 3 && s["tls"]["rejected-by-client"].as_u64().unwrap_or(0) >= 1)
            .then_some(s)
    });
    assert!(stats["tls"].is_object(), "{stats}");
    drop(server);

    // Start-up refusals, each with its reason.
    let m6 = common::metal6();
    let serve = |extra: &str| {
        let st = tempfile::tempdir().expect("state");
        let o = srv.try_exec(&format!(
            "timeout 20 {} serve -i {} --interface m6s0 --no-ra --state-dir {} {extra}",
            m6.display(),
            inv.display(),
            st.path().display()
        ));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(serve("").contains("pass --tls-cert and --tls-key"));
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let err = serve(&format!("--tls-cert {cert} --tls-key {key}"));
    assert!(err.contains("readable by group or others") && err.contains("chmod 600"), "{err}");
}
