//! TLE files as operators give them to `metal6 emulate --tle` (any bytes, lossily UTF-8, as
//! `read_to_string` would refuse and an editor would show): `TleConstellation::parse`, which
//! checks the set line by line (sgp4's element parser), propagates every satellite over the
//! first day and infers the Walker-like grid; then what the emulation does with a constellation
//! it accepted — positions, the topology's links over ten minutes, and the 3LE text the
//! Kubernetes link agent is shipped, which must parse again to the same number of satellites.
//!
//! Must never panic; an accepted set has as many satellites as its grid has slots (the
//! topology indexes positions by grid slot), and its errors render.
//!
//! Not covered: choosing the start time (`--tle-start`; the default, the newest epoch, and
//! the start the agent is given are), the namespaces and links the emulation then makes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metal6_emulation::{TleConstellation, Topology};

/// Sets larger than this are parsed but not run through the topology (bounded time per input).
const MAX_TOPOLOGY_SATS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let c = match TleConstellation::parse(&text, None) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(c.shell.count() as usize, c.len(), "grid {:?} for {} satellites", c.shell, c.len());
    for i in 0..c.shell.count() {
        assert!(c.satellite(i).is_some(), "grid slot {i} has no satellite");
    }
    for t in [0.0, 600.0, 7.0 * 86_400.0] {
        assert_eq!(c.positions(t).len(), c.len());
    }
    // What the link agent gets, read back the way it reads it.
    let shipped = c.to_3le();
    match TleConstellation::parse(&shipped, Some(c.start)) {
        Ok(again) => assert_eq!(again.len(), c.len(), "the shipped set lost satellites:\n{shipped}"),
        Err(e) => panic!("the shipped 3LE does not parse: {e}\n{shipped}"),
    }
    if c.len() <= MAX_TOPOLOGY_SATS {
        let topo = Topology::from_tle(c, vec![]);
        let _ = topo.links_at(0.0);
        let _ = topo.events(0.0, 600.0, 60.0);
    }
});
