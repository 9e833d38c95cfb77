//! The dashboard in a real browser: Debian's headless Chromium, driven by ChromeDriver through
//! fantoccini (a maintained WebDriver client), loads `/` from a real `metal6 serve` while a
//! real `metal6 apply` drives six simulated nodes (tests/lab/fleet_sim.py) that post their
//! events to it. The table shows each node's phase and changes without a reload, a node's
//! timeline opens with its bars and events, and a node whose BMC has no such system shows
//! apply's reason. Screenshots go to target/test-artifacts/dashboard/. Also: the SVG of
//! `metal6 status --timeline`, the event stream and Basic auth, and no secret on any of it.
//!
//! The browser runs in the fleet's namespace: the test thread that drives it enters that
//! namespace (setns) before it starts ChromeDriver, so ChromeDriver, Chromium and the client's
//! connections all live there and nothing leaves the machine.

#![allow(clippy::print_stderr)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet::{FLEET_PASSWORD, Fleet};
use common::{root, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const URL: &str = "http://[fd00:6d:1::1]:8080/";

fn artifacts() -> PathBuf {
    let d = root().join("target/test-artifacts/dashboard");
    std::fs::create_dir_all(&d).expect("artifact dir");
    d
}

/// ChromeDriver, killed with the test.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 250 ms until it returns `Some`, at most `secs` seconds.
async fn until<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `{node: [phase, apply state, waiting for, row class]}` as the page shows it now.
async fn table(c: &Client) -> serde_json::Map<String, Value> {
    let v = c
        .execute(
            "const out = {}; for (const tr of document.querySelectorAll('#fleet tbody tr')) {\
               out[tr.dataset.node] = [tr.querySelector('.phase').textContent, tr.querySelector('.apply').textContent,\
                 tr.querySelector('.wait').textContent, tr.className]; } return out;",
            vec![],
        )
        .await
        .expect("read the table");
    v.as_object().cloned().unwrap_or_default()
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join(name), png).expect("write screenshot");
}

async fn browse(fleet_ns: &str) {
    let port = 9515 + (std::process::id() % 1000) as u16;
    let log = std::fs::File::create(artifacts().join("chromedriver.log")).expect("log");
    let _driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("chromedriver"),
    );
    let profile = tempfile::tempdir().expect("profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
            "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().display())]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = until("ChromeDriver", 30, async || {
        ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .ok()
    })
    .await;
    c.goto(URL).await.expect("load the dashboard");
    // A marker a reload would clear.
    c.execute("window.__m6_loaded = true; return true;", vec![]).await.expect("marker");
    let first = until("six nodes in the table", 30, async || Some(table(&c).await).filter(|t| t.len() == 6)).await;
    eprintln!("dashboard at load: {first:?}");
    until("the event stream to open", 10, async || {
        let t = c.find(Locator::Css("#live")).await.ok()?.text().await.ok()?;
        (t == "live").then_some(())
    })
    .await;
    // Phases change without a reload: every healthy node reaches `ready` on the page.
    let before: Vec<String> = first.values().map(|v| v[0].as_str().unwrap_or("").to_owned()).collect();
    let mid = until("a node's phase to change on the page", 60, async || {
        let t = table(&c).await;
        let now: Vec<String> = t.values().map(|v| v[0].as_str().unwrap_or("").to_owned()).collect();
        (now != before && t.values().any(|v| v[0] == "writing-image")).then_some(t)
    })
    .await;
    eprintln!("dashboard mid-install: {mid:?}");
    screenshot(&c, "fleet-installing.png").await;
    let done = until("five nodes ready and node-005 parked", 120, async || {
        let t = table(&c).await;
        let ready = t.values().filter(|v| v[0] == "ready").count();
        let stuck = t.get("node-005").is_some_and(|v| v[1] == "needs-attention");
        (ready == 5 && stuck).then_some(t)
    })
    .await;
    let reloaded = c.execute("return window.__m6_loaded === true;", vec![]).await.expect("marker");
    assert_eq!(reloaded, json!(true), "the page was not reloaded");
    // The stuck node says why, and is marked.
    let stuck = &done["node-005"];
    assert!(stuck[2].as_str().unwrap_or("").contains("no system \"9\""), "the wait reason: {stuck:?}");
    assert!(stuck[3].as_str().unwrap_or("").contains("stuck"), "{stuck:?}");
    // The fleet picture: one row of bars per node with events. The page fetched timelines once,
    // at load (before any node was ready): a `ready` bar came through the event stream.
    let bars = c.find_all(Locator::Css("#fleet-chart rect.bar[data-node='node-000']")).await.expect("bars");
    assert!(bars.len() >= 3, "node-000's phases in the fleet timeline: {}", bars.len());
    let ready = c
        .find_all(Locator::Css("#fleet-chart rect.bar[data-node='node-000'][data-phase='ready']"))
        .await
        .expect("bars");
    assert_eq!(ready.len(), 1, "node-000's ready bar, from the stream");
    screenshot(&c, "fleet-done.png").await;
    // A node's timeline opens: a Gantt bar per phase, and its events.
    // The table is redrawn as data arrives: a found element can go stale before the click.
    until("a click on node-000", 10, async || {
        c.find(Locator::Css("tr[data-node='node-000'] td.node button")).await.ok()?.click().await.ok()
    })
    .await;
    let view = c.find(Locator::Css("#node-view")).await.expect("node view");
    assert!(view.attr("hidden").await.expect("attr").is_none(), "the node view opened");
    // Read in one script: the chart is redrawn as events arrive.
    let phases: Vec<String> = serde_json::from_value(
        c.execute("return [...document.querySelectorAll('#node-chart rect.bar')].map(b => b.dataset.phase);", vec![])
            .await
            .expect("bars"),
    )
    .unwrap_or_default();
    for want in ["installer", "writing-image", "ready"] {
        assert!(phases.iter().any(|p| p == want), "{want} in node-000's timeline: {phases:?}");
    }
    let rows = c.find_all(Locator::Css("#node-events tbody tr")).await.expect("events");
    assert!(rows.len() >= 5, "node-000's events: {}", rows.len());
    let png = view.screenshot().await.expect("node view screenshot");
    std::fs::write(artifacts().join("node-timeline.png"), png).expect("write screenshot");
    // Filters: by phase.
    until("picking the phase filter", 10, async || {
        c.find(Locator::Css("#phase-filter option[value='ready']")).await.ok()?.click().await.ok()
    })
    .await;
    let t = until("the phase filter", 10, async || Some(table(&c).await).filter(|t| t.len() == 5)).await;
    assert!(t.values().all(|v| v[0] == "ready"), "{t:?}");
    let page = c.source().await.expect("page source");
    assert!(!page.contains(FLEET_PASSWORD), "no BMC password on the page");
    let _ = c.close().await;
    let _ = fleet_ns;
}

#[test]
fn dashboard_shows_a_fleet_installing_live() {
    require_netns!();
    require_tool!("curl");
    require_tool!("python3");
    require_tool!("chromium");
    require_tool!("chromedriver");
    // Six nodes, three per BMC, each install writing for 12 s; node-005 names a system its
    // BMC does not have, so apply parks it (doctor would refuse the run: skipped on purpose).
    let fleet = Fleet::start_with(6, 3, 20, false, 12.0);
    let inv = fleet.dir.path().join("fleet.yaml");
    let good = std::fs::read_to_string(&inv).expect("inventory");
    let (head, tail) = good.split_at(good.find("name: node-005").expect("node-005"));
    std::fs::write(&inv, format!("{head}{}", tail.replacen("system: \"3\"", "system: \"9\"", 1))).expect("write");
    let log = fleet.dir.path().join("apply.log");
    let f = std::fs::File::create(&log).expect("log");
    let mut apply = fleet
        .apply_cmd(&[
            "--parallel",
            "6",
            "--installs",
            "6",
            "--poll",
            "200ms",
            "--skip-doctor",
            "--timeout",
            "preflight=5s",
            "--attempts",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("dup"))
        .stderr(f)
        .spawn()
        .expect("apply");
    // The browser, from inside the fleet's namespace.
    let ns = fleet.ns.name.clone();
    let browser = std::thread::spawn(move || {
        let target = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
        nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(browse(&ns));
    });
    let r = browser.join();
    let status = wait_for("apply to finish", Duration::from_secs(120), || apply.try_wait().ok().flatten());
    assert!(r.is_ok(), "the browser test failed (screenshots in {})", artifacts().display());
    assert_eq!(status.code(), Some(1), "node-005 parked:\n{}", std::fs::read_to_string(&log).unwrap_or_default());

    // The same fleet as an SVG from the CLI: one bar per phase per node.
    let svg = fleet.dir.path().join("timeline.svg");
    let out = fleet.ns.try_exec(&format!(
        "{} status --server {URL} --timeline {}",
        common::metal6().display(),
        svg.display()
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&svg).expect("svg");
    std::fs::copy(&svg, artifacts().join("fleet-timeline.svg")).expect("copy");
    for i in 0..5 {
        let phases: Vec<&str> = text
            .match_indices(&format!(r#"data-node="node-{i:03}" data-phase=""#))
            .map(|(at, m)| {
                let rest = &text[at + m.len()..];
                &rest[..rest.find('"').unwrap_or(0)]
            })
            .collect();
        // A simulated install goes through each phase once: one bar each.
        let distinct: std::collections::BTreeSet<&str> = phases.iter().copied().collect();
        assert_eq!(phases.len(), distinct.len(), "node-{i:03}: one bar per phase: {phases:?}");
        for want in ["installer", "writing-image", "image-written", "installed"] {
            assert!(distinct.contains(want), "node-{i:03}: {want} in {phases:?}");
        }
        assert_eq!(phases.last(), Some(&"ready"), "node-{i:03}: {phases:?}");
    }
    // The fleet JSON and the event stream carry no secret (tokens travel only in plan.json).
    let fleet_json = fleet.ns.try_exec(&format!("curl -sS {URL}v1/fleet"));
    let body = String::from_utf8_lossy(&fleet_json.stdout);
    assert!(body.contains("needs-attention") && !body.contains(FLEET_PASSWORD), "{body}");
    let timeline = fleet.ns.try_exec(&format!("curl -sS {URL}v1/nodes/node-000/timeline"));
    assert!(!String::from_utf8_lossy(&timeline.stdout).contains("\"token\""), "no token in events");
}

/// Basic auth by reference guards the dashboard's routes (not the nodes' API), and the event
/// stream sends each new event as it is recorded.
#[test]
fn dashboard_auth_and_event_stream() {
    require_netns!();
    require_tool!("curl");
    let (srv, cli) = common::lab_link("52:54:00:6d:00:01");
    srv.exec("ip -6 addr add fd00:6d:1::100/128 dev m6s0 nodad");
    cli.exec("ip -6 addr add fd00:6d:1::50/64 dev m6c0 nodad");
    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "dash-pw-31e7\n").expect("pw");
    let pw_ref = format!("file:{}", pw.display());
    let server = common::Server::start(
        &srv,
        &root().join("inventory/lab.yaml"),
        "m6s0",
        &["--no-ra", "--dashboard-user", "ops", "--dashboard-password", &pw_ref],
    );
    assert!(!server.log_text().contains("dash-pw-31e7"), "the password is not logged");
    let code = |args: &str| {
        let out = cli.try_exec(&format!("curl -s -o /dev/null -w '%{{http_code}}' {args}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(code("http://[fd00:6d:1::1]:8080/"), "401");
    assert_eq!(code("-u ops:wrong http://[fd00:6d:1::1]:8080/v1/fleet"), "401");
    assert_eq!(code("-u ops:dash-pw-31e7 http://[fd00:6d:1::1]:8080/"), "200");
    assert_eq!(code("-u ops:dash-pw-31e7 http://[fd00:6d:1::1]:8080/v1/ui/dashboard.js"), "200");
    assert_eq!(code("http://[fd00:6d:1::1]:8080/v1/nodes"), "200", "the nodes' API stays open");
    // The stream: subscribe, then a node reports; its event arrives on the stream.
    let stream = dir.path().join("stream.txt");
    let mut curl = Command::new("ip")
        .args(["netns", "exec", &cli.name, "curl", "-sN", "--max-time", "8", "-u", "ops:dash-pw-31e7"])
        .arg("http://[fd00:6d:1::1]:8080/v1/events/stream")
        .stdout(std::fs::File::create(&stream).expect("out"))
        .spawn()
        .expect("curl");
    wait_for("the stream to open", Duration::from_secs(5), || {
        std::fs::read_to_string(&stream).ok().filter(|t| t.contains("retry:")).map(|_| ())
    });
    let post = srv.try_exec(
        "curl -sSf --interface fd00:6d:1::100 -X POST -H 'content-type: application/json' \
         -d '{\"phase\":\"writing-image\",\"kind\":\"progress\",\"percent\":40}' \
         http://[fd00:6d:1::1]:8080/v1/nodes/lab-node-1/events",
    );
    assert!(post.status.success(), "{}", String::from_utf8_lossy(&post.stderr));
    let got = wait_for("the event on the stream", Duration::from_secs(5), || {
        std::fs::read_to_string(&stream).ok().filter(|t| t.contains("writing-image"))
    });
    let _ = curl.kill();
    let _ = curl.wait();
    let line = got.lines().find(|l| l.starts_with("data: ")).expect("a data line");
    let e: Value = serde_json::from_str(&line[6..]).expect("event JSON");
    assert_eq!((e["node"].as_str(), e["percent"].as_u64()), (Some("lab-node-1"), Some(40)), "{e}");
}

/// The running emulation's picture on the dashboard: `emulate run --draw FILE` rewrites the
/// SVG as the constellation moves and links switch; serve (`--emulation-svg FILE`) hands out
/// the current one.
#[test]
fn dashboard_serves_the_running_emulations_picture() {
    require_netns!();
    require_tool!("curl");
    let (srv, cli) = common::lab_link("52:54:00:6d:00:01");
    cli.exec("ip -6 addr add fd00:6d:1::50/64 dev m6c0 nodad");
    let dir = tempfile::tempdir().expect("tmp");
    let svg = dir.path().join("constellation.svg");
    let svg_arg = svg.to_str().expect("utf-8").to_owned();
    let _server = common::Server::start(
        &srv,
        &root().join("inventory/lab.yaml"),
        "m6s0",
        &["--no-ra", "--emulation-svg", &svg_arg],
    );
    let fetch = || {
        let out = cli.try_exec("curl -sSf http://[fd00:6d:1::1]:8080/v1/emulation.svg");
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(fetch().is_none(), "no picture before the emulation draws one (404)");
    // A 4 x 4 shell in namespaces (as root), 120 s of constellation time at 20x.
    let mut emu = Command::new(common::metal6())
        .args([
            "emulate",
            "run",
            "--shell",
            "4x4",
            "--altitude-km",
            "2000",
            "--duration",
            "120",
            "--speed",
            "20",
            "--step",
            "10",
            "--draw",
        ])
        .arg(&svg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("emulate.log")).expect("log"))
        .spawn()
        .expect("emulate run");
    let mut seen: Vec<String> = vec![];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && emu.try_wait().ok().flatten().is_none() {
        if let Some(body) = fetch()
            && !seen.contains(&body)
        {
            assert!(
                body.starts_with("<svg") && body.trim_end().ends_with("</svg>"),
                "a whole picture: {}",
                &body[..body.len().min(200)]
            );
            seen.push(body);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = emu.wait().expect("emulate");
    assert!(status.success(), "{}", std::fs::read_to_string(dir.path().join("emulate.log")).unwrap_or_default());
    assert!(seen.len() >= 3, "the picture changed as the constellation moved: {} versions", seen.len());
}
