//! Claims on the shared PostgreSQL (Debian's, started in a private data directory): a worker
//! renews only the claims it still holds, so a claim whose release failed lapses and another
//! worker takes the node.

#![allow(clippy::print_stderr)] // skips say why

use std::time::{Duration, Instant};

use metal6_db::DbConfig;
use metal6_db::testpg::TestPg;
use metal6_orchestrator::{Claim, History, NodeRecord, PgStore, Store};

fn pg() -> Option<TestPg> {
    TestPg::start_or_skip()
}

fn store(pg: &TestPg, name: &str, lease: Duration) -> PgStore {
    let cfg = DbConfig::parse(&pg.url(), Some(pg.password_ref().parse().expect("ref"))).expect("url");
    PgStore::open(cfg, name, lease).unwrap_or_else(|e| panic!("open: {e}\n{}", pg.log()))
}

fn record(s: &PgStore, node: &str) {
    s.commit(&NodeRecord::new(node, 1), &[History::new(1, "test", "transition", "pending")]).expect("record");
}

/// Waits until `b` can claim `node`, or `within` runs out: how long it took.
fn claimable(b: &PgStore, node: &str, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if b.claim(node).is_ok_and(|c| c == Claim::Held) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn a_claim_whose_release_failed_lapses_while_held_claims_are_renewed() {
    let Some(pg) = pg() else { return };
    let lease = Duration::from_secs(2);
    let a = store(&pg, "wa", lease);
    let b = store(&pg, "wb", lease);
    record(&a, "n1");
    record(&a, "n2");
    assert_eq!(a.claim("n1").expect("claim"), Claim::Held);
    assert_eq!(a.claim("n2").expect("claim"), Claim::Held);
    // The database is gone just when wa gives n1 up: the release fails.
    pg.stop_server("fast");
    assert!(a.release("n1").is_err(), "a release with the database down cannot succeed");
    pg.start_server();
    // wa keeps renewing n2 (it still drives it) but not n1: n1 lapses within a lease or so.
    let took = claimable(&b, "n1", lease * 4);
    assert!(took.is_some(), "wa's failed release of n1 kept its claim alive");
    assert!(
        matches!(b.claim("n2").expect("claim"), Claim::Other { ref owner, .. } if owner == "wa"),
        "wa's live claim of n2 was not renewed"
    );
    eprintln!("n1 claimable by wb {:?} after the database came back", took.unwrap_or_default());
}
