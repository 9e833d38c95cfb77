//! Benchmark: validating a 10,000-node inventory (target: under one second).
//!
//! Generates the fleet in memory (4 NICs, a BMC and labels per node, two relayed segments),
//! then times `check_str` — parse, structural check, deserialization, semantic validation —
//! and prints the median and range of several runs. Run with `make bench-inventory`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

fn fleet(n: usize) -> String {
    let mut s = String::with_capacity(n * 500);
    s.push_str(
        "version: 1\nsite:\n  name: bench\n  domain: bench.example.net\n  provisioning:\n    interface: prov0\n    \
         prefix: 2001:db8:100::/64\n    router: 2001:db8:100::1\n    dns: [2001:db8:100::53]\n  boot_server:\n    \
         address: 2001:db8:100::10\n  relays:\n    - name: rack-a\n      link_address: 2001:db8:101::1\n      \
         prefix: 2001:db8:101::/64\n      router: 2001:db8:101::1\n    - name: rack-b\n      \
         link_address: 2001:db8:102::1\n      prefix: 2001:db8:102::/64\n      router: 2001:db8:102::1\n\
         profiles:\n  worker:\n    role: worker\n    boot: uefi-http\n    image: node\n    sysctl: dense\n\
         sysctl_profiles:\n  dense:\n    net.core.somaxconn: 8192\nnodes:\n",
    );
    for i in 0..n {
        let seg = match i % 3 {
            0 => "",
            1 => "\n    segment: rack-a",
            _ => "\n    segment: rack-b",
        };
        let _ = write!(
            s,
            "  - name: w{i:05}\n    profile: worker\n    index: {i}{seg}\n    bmc:\n      address: 2001:db8:200::{i:x}\n      \
             username: root\n      password: env:BMC_PW\n    nics:\n      - name: eno1\n        mac: 02:00:00:{a:02x}:{b:02x}:01\n        \
             boot: true\n      - name: eno2\n        mac: 02:00:00:{a:02x}:{b:02x}:02\n      - name: ens5f0\n        \
             mac: 02:00:00:{a:02x}:{b:02x}:03\n      - name: ens5f1\n        mac: 02:00:00:{a:02x}:{b:02x}:04\n    \
             disk:\n      size: 894GiB\n    labels:\n      rack: r{r}\n",
            a = i >> 8,
            b = i & 0xff,
            r = i / 40,
        );
    }
    s
}

fn main() {
    let n = 10_000;
    let src = fleet(n);
    let runs = 7;
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let (inv, diags) = metal6_inventory::check_str(&src, "bench.yaml");
        let elapsed = t.elapsed();
        let inv = inv.unwrap_or_else(|| panic!("bench inventory must be valid:\n{}", diags.render()));
        assert_eq!(inv.nodes.len(), n);
        times.push(elapsed);
    }
    times.sort();
    let median = times[runs / 2];
    let verdict = if median < Duration::from_secs(1) { "ok" } else { "OVER TARGET" };
    let report = format!(
        "inventory validate: {n} nodes, {:.1} MiB, median {:.3} s (min {:.3}, max {:.3}) over {runs} runs; target < 1 s: {verdict}",
        src.len() as f64 / (1024.0 * 1024.0),
        median.as_secs_f64(),
        times[0].as_secs_f64(),
        times[runs - 1].as_secs_f64(),
    );
    // A bench binary's job is to print its result.
    #[allow(clippy::print_stdout)]
    {
        println!("{report}");
    }
}
