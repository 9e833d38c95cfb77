//! `metal6 emulate` with a constellation given as TLEs (`--tle`), as a user runs it: a Walker
//! shell exported by `emulate tle` and read back gives the same links as the shell itself; a
//! broken file is refused with file:line:column; the Kubernetes backend ships the TLEs to the
//! link agent, and the agent — run with the exact command line of its DaemonSet, in a namespace
//! standing in for the node — builds every ISL of the grid from them.

#![allow(clippy::print_stderr)] // skips say why

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Netns;
use serde_json::Value;

/// 12 planes × 12 at 1,200 km, 53°, F = 5: every satellite sees its four neighbours.
const SHELL: [&str; 8] = ["--shell", "12x12", "--altitude-km", "1200", "--inclination", "53", "--phasing", "5"];
const EPOCH: &str = "2026-12-01T00:00:00";

fn metal6(args: &[&str]) -> Output {
    Command::new(common::metal6()).args(args).output().expect("metal6 runs")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn export(dir: &Path) -> PathBuf {
    let f = dir.join("shell.tle");
    let mut args: Vec<&str> = vec!["emulate", "tle", "--epoch", EPOCH, "-f"];
    let fs = f.to_str().expect("utf-8 path").to_owned();
    args.push(&fs);
    args.extend(SHELL);
    ok(&metal6(&args));
    f
}

/// (kind, from, to) → delay of every link up at `at`.
fn links(args: &[&str], at: &str) -> std::collections::BTreeMap<(String, String, String), f64> {
    let mut a = vec!["-o", "json", "emulate", "plan", "--at", at, "--station", "darmstadt:49.87:8.65"];
    a.extend(args);
    let v: Value = serde_json::from_str(&ok(&metal6(&a))).expect("json");
    v["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            ((s("kind"), s("a"), s("b")), l["delay_ms"].as_f64().unwrap_or(f64::NAN))
        })
        .collect()
}

#[test]
fn a_walker_shell_through_tles_has_the_same_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = export(dir.path());
    let text = std::fs::read_to_string(&f).expect("written");
    assert_eq!(text.lines().count(), 3 * 144, "3LE: name and two lines per satellite");
    let fs = f.to_str().expect("utf-8");
    let table = ok(&metal6(&["emulate", "plan", "--tle", fs]));
    assert!(
        table.starts_with("from TLEs: 12x12 Walker delta with phasing 5, 1200 km, 53.0°; t = 0 at 2026-12-01 00:00:00"),
        "{table}"
    );
    for at in ["0", "600"] {
        let walker = links(&SHELL, at);
        let sgp4 = links(&["--tle", fs], at);
        assert!(walker.len() > 250, "{}", walker.len());
        assert_eq!(walker.keys().collect::<Vec<_>>(), sgp4.keys().collect::<Vec<_>>(), "t = {at}");
        for (k, d) in &walker {
            // SGP4 (J2, WGS84) against the two-body circles: within a tenth of a millisecond.
            assert!((d - sgp4[k]).abs() < 0.1, "{k:?} at {at}: {d} vs {}", sgp4[k]);
        }
    }
    // --shell, when given, must be the grid the TLEs make.
    let e = metal6(&["emulate", "plan", "--tle", fs, "--shell", "12x11"]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("--shell 12x11, but the TLEs make 12x12 (144 satellites)"));
    // Orbit parameters come from the TLEs: giving them too is a usage error.
    let e = metal6(&["emulate", "plan", "--tle", fs, "--inclination", "60"]);
    assert_eq!(e.status.code(), Some(2), "{}", String::from_utf8_lossy(&e.stderr));
}

#[test]
fn a_broken_tle_file_is_refused_with_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = export(dir.path());
    let text = std::fs::read_to_string(&f).expect("written");
    // Satellite 2's inclination altered by a digit (line 6): its checksum no longer holds.
    let broken: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 5 { l.replacen(" 53.0000", " 53.0001", 1) } else { l.to_owned() })
        .collect();
    std::fs::write(&f, broken.join("\n")).expect("write");
    let fs = f.to_str().expect("utf-8");
    let e = metal6(&["emulate", "plan", "--tle", fs]);
    assert!(!e.status.success());
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(err.contains(&format!("{fs}:6:69:")) && err.contains("checksum"), "{err}");
    // One satellite gone: planes of different sizes, and which.
    std::fs::write(&f, text.lines().skip(3).collect::<Vec<_>>().join("\n")).expect("write");
    let err = String::from_utf8_lossy(&metal6(&["emulate", "plan", "--tle", fs]).stderr).into_owned();
    assert!(
        err.contains("planes of different sizes: 12 planes, most with 12 satellites; plane 11 (node")
            && err.contains(") has 11;"),
        "{err}"
    );
}

#[test]
fn the_link_agent_builds_the_grid_from_the_tles_it_is_shipped() {
    require_netns!();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = export(dir.path());
    let out = dir.path().join("k8s");
    let (fs, os) = (f.to_str().expect("utf-8"), out.to_str().expect("utf-8"));
    ok(&metal6(&["emulate", "run", "--backend", "k8s", "--tle", fs, "--out", os]));
    let agent = std::fs::read_to_string(out.join("link-agent.yaml")).expect("agent manifest");
    // The ConfigMap's block scalar, unindented, is the file the agent reads.
    let tle: String = agent
        .lines()
        .skip_while(|l| !l.contains("constellation.tle: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    assert_eq!(tle.lines().count(), 3 * 144, "all satellites shipped");
    let shipped = dir.path().join("constellation.tle");
    std::fs::write(&shipped, &tle).expect("write");
    let line = agent.lines().find(|l| l.trim_start().starts_with("command:")).expect("command");
    let command: Vec<String> =
        serde_json::from_str(line.trim_start().trim_start_matches("command:").trim()).expect("JSON command");
    assert!(command.contains(&"--tle-start".to_owned()) && command.contains(&EPOCH.to_owned()), "{command:?}");
    let args: Vec<String> = command[1..]
        .iter()
        .map(|a| if a == "/etc/metal6/constellation.tle" { shipped.display().to_string() } else { a.clone() })
        .chain(["--once".to_owned()])
        .collect();
    let node = Netns::new();
    node.exec("ip link set lo up");
    let run = node.try_exec(&format!("{} {}", common::metal6().display(), args.join(" ")));
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("288 ISL veth pairs created"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let veths = String::from_utf8_lossy(&node.exec("ip -o link show type veth").stdout).lines().count();
    assert_eq!(veths, 2 * 288, "both ends of 2 × 144 ISLs");
    if let Some(v) = common::kubernetes_validate() {
        let o =
            Command::new(v).args(["--strict", "-k", "1.31.4"]).arg(out.join("link-agent.yaml")).output().expect("runs");
        assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
}
