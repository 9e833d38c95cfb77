//! The shared tables against Debian's PostgreSQL, started in a private data directory: what
//! keeps two servers from handing one address to two clients is the database's, so it is
//! tested on the database.

#![allow(clippy::print_stderr)] // skips say why

use metal6_db::leases::{self, EventRow, Item, Statements};
use metal6_db::testpg::TestPg;
use metal6_db::{DbConfig, migrate};
use metal6_dhcp6::bindings::{Binding, BindingKey, Change};

fn pg() -> Option<TestPg> {
    TestPg::start_or_skip()
}

fn connect(pg: &TestPg) -> postgres::Client {
    let cfg = DbConfig::parse(&pg.url(), Some(pg.password_ref().parse().expect("ref"))).expect("url");
    cfg.connect().unwrap_or_else(|e| panic!("connect: {e:?}\n{}", pg.log()))
}

fn pool(duid: u8, addr: &str, expires: u64) -> Binding {
    Binding {
        key: BindingKey { duid: vec![0, 3, 0, 1, duid], iaid: 1 },
        addr: addr.parse().expect("addr"),
        node: None,
        expires,
    }
}

fn upsert(b: &Binding) -> Item {
    Item { changes: vec![Change::Upsert(b.clone())], events: Vec::new() }
}

#[test]
fn migrations_apply_once_and_the_status_says_so() {
    let Some(pg) = pg() else { return };
    let mut c = connect(&pg);
    let s = migrate::status(&mut c).expect("status");
    assert_eq!((s.version, s.pending.len()), (0, migrate::MIGRATIONS.len()));
    assert!(migrate::check(&mut c).is_err(), "an empty database is not ready");
    assert_eq!(migrate::migrate(&mut c).expect("migrate").len(), migrate::MIGRATIONS.len());
    assert!(migrate::migrate(&mut c).expect("again").is_empty(), "applied once");
    migrate::check(&mut c).expect("ready");
    // A newer schema than this binary knows is refused, not written.
    c.execute("INSERT INTO metal6_schema (version, what) VALUES (999, 'from the future')", &[]).expect("insert");
    let e = migrate::check(&mut c).expect_err("too new");
    assert!(e.to_string().contains("upgrade metal6"), "{e}");
}

#[test]
fn a_wrong_password_is_a_clear_error_without_the_password() {
    let Some(pg) = pg() else { return };
    let wrong = pg.password_file.with_file_name("wrong");
    std::fs::write(&wrong, "not-the-password").expect("write");
    let cfg = DbConfig::parse(&pg.url(), Some(format!("file:{}", wrong.display()).parse().expect("ref"))).expect("url");
    let Err(e) = cfg.connect() else { panic!("a wrong password was accepted") };
    let text = metal6_db::error_chain(&e);
    assert!(text.contains("cannot connect to the state database") && text.contains("password"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}

#[test]
fn two_servers_cannot_bind_one_address_twice_or_move_each_others_bindings() {
    let Some(pg) = pg() else { return };
    let mut a = connect(&pg);
    migrate::migrate(&mut a).expect("migrate");
    let mut b = connect(&pg);
    let (sa, sb) = (Statements::prepare(&mut a).expect("prepare"), Statements::prepare(&mut b).expect("prepare"));
    let now = 1_000_000;
    let one = pool(1, "fd00:6d:1::1:10", now + 600);
    let r = leases::commit(&mut a, &sa, "srv-a", now, &[upsert(&one)]).expect("commit");
    assert_eq!(r, vec![Ok(())]);
    // Server B, not knowing, gives the same pool address to another client: refused, and told
    // who holds it. The batch's other item still commits.
    let two = pool(2, "fd00:6d:1::1:10", now + 600);
    let three = pool(3, "fd00:6d:1::1:11", now + 600);
    let r = leases::commit(&mut b, &sb, "srv-b", now, &[upsert(&two), upsert(&three)]).expect("commit");
    assert_eq!(r.len(), 2);
    let Err(conflicts) = &r[0] else { panic!("a second holder of one pool address was accepted: {r:?}") };
    assert_eq!(conflicts[0].held.as_ref(), Some(&one));
    assert_eq!(r[1], Ok(()));
    // B may not move A's live binding of client 1 elsewhere; A may.
    let moved = pool(1, "fd00:6d:1::1:12", now + 600);
    let r = leases::commit(&mut b, &sb, "srv-b", now, &[upsert(&moved)]).expect("commit");
    let Err(conflicts) = &r[0] else { panic!("another server's binding was moved: {r:?}") };
    assert_eq!(conflicts[0].held.as_ref(), Some(&one));
    // B may renew it at the same address (the survivor of a dead server does exactly this).
    let renewed = pool(1, "fd00:6d:1::1:10", now + 1200);
    assert_eq!(leases::commit(&mut b, &sb, "srv-b", now, &[upsert(&renewed)]).expect("commit"), vec![Ok(())]);
    // Once expired, the address goes to whoever asks.
    let later = now + 2000;
    let four = pool(4, "fd00:6d:1::1:10", later + 600);
    assert_eq!(leases::commit(&mut b, &sb, "srv-b", later, &[upsert(&four)]).expect("commit"), vec![Ok(())]);
    let (live, _) = leases::load_live(&mut a, later).expect("load");
    let holders: Vec<_> = live.iter().filter(|x| x.addr == four.addr).collect();
    assert_eq!(holders, vec![&four]);
    // A follower of the table sees the expired holder removed before the new one came.
    let seen = leases::changes_since(&mut a, "srv-a", (0, 0), 100).expect("changes");
    let pos_remove = seen.iter().position(|(_, c)| *c == Change::Remove(one.key.clone())).expect("removal");
    let pos_four = seen.iter().position(|(_, c)| *c == Change::Upsert(four.clone())).expect("upsert");
    assert!(pos_remove < pos_four, "{seen:?}");
}

#[test]
fn an_event_is_stored_once_however_often_it_is_written() {
    let Some(pg) = pg() else { return };
    let mut a = connect(&pg);
    migrate::migrate(&mut a).expect("migrate");
    let mut b = connect(&pg);
    let (sa, sb) = (Statements::prepare(&mut a).expect("prepare"), Statements::prepare(&mut b).expect("prepare"));
    let body = serde_json::json!({"node": "n1", "kind": "leased"});
    let ev = EventRow { id: leases::dhcp_event_id(b"duid", [1, 2, 3], 3, &body), node: "n1".into(), ts_ms: 5, body };
    let item = Item { changes: Vec::new(), events: vec![ev] };
    for _ in 0..3 {
        leases::commit(&mut a, &sa, "srv-a", 1, std::slice::from_ref(&item)).expect("commit");
    }
    leases::commit(&mut b, &sb, "srv-b", 1, std::slice::from_ref(&item)).expect("commit");
    assert_eq!(leases::events_of(&mut a, "n1").expect("events").len(), 1);
}

/// Servers and workers starting at once all migrate: each migration runs once and none fails
/// (CREATE TABLE IF NOT EXISTS alone raced in the catalog: two apply workers saw it).
#[test]
fn concurrent_migrations_apply_once_and_none_fails() {
    let Some(pg) = pg() else { return };
    let cfg = DbConfig::parse(&pg.url(), Some(pg.password_ref().parse().expect("ref"))).expect("url");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (cfg, barrier) = (cfg.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut c = cfg.connect().expect("connect");
                barrier.wait();
                migrate::migrate(&mut c).map(|v| v.len()).map_err(|e| e.to_string())
            })
        })
        .collect();
    let applied: Vec<usize> = threads.into_iter().map(|t| t.join().expect("thread").expect("migrate")).collect();
    assert_eq!(applied.iter().sum::<usize>(), migrate::MIGRATIONS.len(), "{applied:?}");
}

/// A follower never skips a transaction that commits late: while an earlier transaction is
/// still open, later ones are not read past it (the window a sequence alone left open).
#[test]
fn a_follower_reads_a_late_commit() {
    let Some(pg) = pg() else { return };
    let mut a = connect(&pg);
    migrate::migrate(&mut a).expect("migrate");
    let (mut slow, mut fast) = (connect(&pg), connect(&pg));
    let st_fast = Statements::prepare(&mut fast).expect("prepare");
    let now = 1_000_000;
    // The slow transaction takes its numbers first and commits last.
    let mut tx = slow.transaction().expect("begin");
    tx.execute(
        "INSERT INTO bindings (duid, iaid, addr, node, expires, server, seq)
         VALUES ('\\x01', 1, 'fd00:6d:1::1:20', NULL, $1, 'srv-b', nextval('metal6_change_seq'))",
        &[&(now as i64 + 600)],
    )
    .expect("insert");
    let late = pool(2, "fd00:6d:1::1:21", now + 600);
    assert_eq!(leases::commit(&mut fast, &st_fast, "srv-b", now, &[upsert(&late)]).expect("commit"), vec![Ok(())]);
    let seen = leases::changes_since(&mut a, "srv-a", (0, 0), 100).expect("changes");
    assert!(seen.is_empty(), "read past a transaction still open: {seen:?}");
    tx.commit().expect("commit the slow one");
    let seen = leases::changes_since(&mut a, "srv-a", (0, 0), 100).expect("changes");
    assert_eq!(seen.len(), 2, "{seen:?}");
    // From the cursor of the last read, nothing comes twice.
    let again = leases::changes_since(&mut a, "srv-a", seen[1].0, 100).expect("changes");
    assert!(again.is_empty(), "{again:?}");
}
