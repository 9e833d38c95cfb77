//! `/metrics` in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::http::HttpState;

pub fn render(state: &HttpState) -> String {
    let s = state.stats.snapshot();
    let c = &state.counters;
    let mut out = String::with_capacity(2048);
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family("metal6_dhcpv6_received_total", "counter", "DHCPv6 messages received, by type.");
    for (t, n) in &s.received {
        let _ = writeln!(out, "metal6_dhcpv6_received_total{{type=\"{t}\"}} {n}");
    }
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family("metal6_dhcpv6_sent_total", "counter", "DHCPv6 replies sent, by type.");
    for (t, n) in &s.sent {
        let _ = writeln!(out, "metal6_dhcpv6_sent_total{{type=\"{t}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP metal6_dhcpv6_dropped_total DHCPv6 messages dropped, by reason.\n# TYPE metal6_dhcpv6_dropped_total counter"
    );
    for (t, n) in &s.dropped {
        let _ = writeln!(out, "metal6_dhcpv6_dropped_total{{reason=\"{t}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP metal6_dhcpv6_leases Bindings in the lease table.\n# TYPE metal6_dhcpv6_leases gauge\nmetal6_dhcpv6_leases {}",
        s.leases
    );
    let _ = writeln!(
        out,
        "# HELP metal6_ra_sent_total Router Advertisements sent.\n# TYPE metal6_ra_sent_total counter\nmetal6_ra_sent_total {}",
        s.ra_sent
    );
    let _ = writeln!(
        out,
        "# HELP metal6_http_requests_total HTTP requests.\n# TYPE metal6_http_requests_total counter\nmetal6_http_requests_total {}",
        c.requests.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP metal6_http_responses_total HTTP responses, by status class.\n# TYPE metal6_http_responses_total counter"
    );
    for (class, n) in [("2xx", &c.status_2xx), ("3xx", &c.status_3xx), ("4xx", &c.status_4xx), ("5xx", &c.status_5xx)] {
        let _ = writeln!(out, "metal6_http_responses_total{{class=\"{class}\"}} {}", n.load(Ordering::Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP metal6_http_sent_bytes_total Bytes of file bodies sent.\n# TYPE metal6_http_sent_bytes_total counter\nmetal6_http_sent_bytes_total {}",
        c.bytes_sent.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP metal6_http_sendfile_bytes_total Bytes of file bodies sent by sendfile (the artifact fast path).\n# TYPE metal6_http_sendfile_bytes_total counter\nmetal6_http_sendfile_bytes_total {}",
        c.bytes_sendfile.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP metal6_refused_total Requests refused by a limit, by limit.\n# TYPE metal6_refused_total counter"
    );
    for (t, n) in &s.refused {
        let _ = writeln!(out, "metal6_refused_total{{limit=\"{t}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP metal6_identity_conflicts_total Stale node tokens presented: another host took a plan for that node.\n# TYPE metal6_identity_conflicts_total counter\nmetal6_identity_conflicts_total {}",
        s.identity_conflicts
    );
    let _ = writeln!(
        out,
        "# HELP metal6_panics_total Panics caught in tasks (each logged).\n# TYPE metal6_panics_total counter\nmetal6_panics_total {}",
        s.panics
    );
    let _ = writeln!(
        out,
        "# HELP metal6_events_file_bytes Size of the event log.\n# TYPE metal6_events_file_bytes gauge\nmetal6_events_file_bytes {}",
        state.events.file_size()
    );
    let _ = writeln!(out, "# HELP metal6_nodes Inventory nodes, by phase.\n# TYPE metal6_nodes gauge");
    let mut phases: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for n in &state.inv.nodes {
        *phases.entry(state.events.phase(&n.name).map_or_else(|| "waiting".into(), |p| p.phase)).or_default() += 1;
    }
    for (p, n) in phases {
        let _ = writeln!(out, "metal6_nodes{{phase=\"{p}\"}} {n}");
    }
    out
}
