//! `/metrics` in the Prometheus text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::http::HttpState;

/// The text under construction: one family at a time, `# HELP` and `# TYPE` first.
struct Families(String);

impl Families {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A family of one sample without labels.
    fn scalar(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {value}");
    }

    /// A family with one label, a sample per value.
    fn labelled<K: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (K, u64)>,
    ) {
        self.head(name, kind, help);
        for (k, v) in samples {
            // Label values can come from a node's report (its phase): escape them as the
            // exposition format says, or one quote breaks the whole scrape.
            let k = k.to_string().replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = writeln!(self.0, "{name}{{{label}=\"{k}\"}} {v}");
        }
    }
}

pub fn render(state: &HttpState) -> String {
    let s = state.stats.snapshot();
    let c = &state.counters;
    let mut f = Families(String::with_capacity(2048));
    let each = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    f.labelled(
        "metal6_dhcpv6_received_total",
        "counter",
        "DHCPv6 messages received, by type.",
        "type",
        each(&s.received),
    );
    f.labelled("metal6_dhcpv6_sent_total", "counter", "DHCPv6 replies sent, by type.", "type", each(&s.sent));
    f.labelled(
        "metal6_dhcpv6_dropped_total",
        "counter",
        "DHCPv6 messages dropped, by reason.",
        "reason",
        each(&s.dropped),
    );
    f.scalar("metal6_dhcpv6_leases", "gauge", "Bindings in the lease table.", s.leases);
    f.scalar(
        "metal6_state_db_degraded",
        "gauge",
        "1 while the shared state database cannot be reached (only renewals of known bindings are answered).",
        u64::from(s.db.degraded),
    );
    f.scalar(
        "metal6_state_db_degraded_replies_total",
        "counter",
        "Renewals answered while the state database was unreachable.",
        s.db.degraded_replies,
    );
    f.scalar(
        "metal6_state_db_deferred",
        "gauge",
        "Renewals answered while degraded, not yet written to the state database.",
        s.db.deferred,
    );
    f.scalar(
        "metal6_state_db_conflicts_total",
        "counter",
        "Replies withheld because the state database holds another binding for the IA or address.",
        s.db.conflicts,
    );
    f.scalar(
        "metal6_state_db_refused_nodes",
        "gauge",
        "Nodes refused because the current inventory generation describes them differently.",
        s.db.refused_nodes,
    );
    f.scalar("metal6_ra_sent_total", "counter", "Router Advertisements sent.", s.ra_sent);
    f.scalar("metal6_http_requests_total", "counter", "HTTP requests.", load(&c.requests));
    f.labelled(
        "metal6_http_responses_total",
        "counter",
        "HTTP responses, by status class.",
        "class",
        [("2xx", &c.status_2xx), ("3xx", &c.status_3xx), ("4xx", &c.status_4xx), ("5xx", &c.status_5xx)]
            .map(|(class, n)| (class, load(n))),
    );
    f.scalar("metal6_http_sent_bytes_total", "counter", "Bytes of file bodies sent.", load(&c.bytes_sent));
    f.scalar(
        "metal6_http_sendfile_bytes_total",
        "counter",
        "Bytes of file bodies sent by sendfile (the artifact fast path).",
        load(&c.bytes_sendfile),
    );
    f.labelled("metal6_refused_total", "counter", "Requests refused by a limit, by limit.", "limit", each(&s.refused));
    f.scalar(
        "metal6_identity_conflicts_total",
        "counter",
        "Stale node tokens presented: another host took a plan for that node.",
        s.identity_conflicts,
    );
    f.scalar("metal6_panics_total", "counter", "Panics caught in tasks (each logged).", s.panics);
    f.scalar("metal6_events_file_bytes", "gauge", "Size of the event log.", state.events.file_size());
    let mut phases: BTreeMap<String, u64> = BTreeMap::new();
    for n in &state.inv.nodes {
        *phases.entry(state.events.phase(&n.name).map_or_else(|| "waiting".into(), |p| p.phase)).or_default() += 1;
    }
    f.labelled("metal6_nodes", "gauge", "Inventory nodes, by phase.", "phase", phases);
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_from_reports_are_escaped() {
        let mut f = Families(String::new());
        f.labelled("m", "gauge", "h.", "phase", [("a\"b\\c\nd}", 1)]);
        assert!(f.0.ends_with("m{phase=\"a\\\"b\\\\c\\nd}\"} 1\n"), "{}", f.0);
        assert_eq!(f.0.lines().count(), 3, "one sample line");
    }
}
