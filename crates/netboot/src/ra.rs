//! The Router Advertisement service: periodic RAs, and an RA soon after each Router
//! Solicitation, from the interface's link-local address with hop limit 255.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::stats::Stats;

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// RFC 4861 §10: MIN_DELAY_BETWEEN_RAS.
const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// How often the blocking loop looks at the cancellation token.
const POLL: Duration = Duration::from_millis(200);

pub fn bind(interface: &str, ifindex: u32) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(interface.as_bytes()))?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_loop_v6(false)?;
    s.set_multicast_if_v6(ifindex)?;
    s.join_multicast_v6(&ALL_ROUTERS, ifindex)?;
    Ok(s)
}

/// Runs on a blocking thread: RAs are a few packets a minute, and a blocking raw socket with
/// a read timeout needs no unsafe fd registration with the async reactor.
pub fn run(
    sock: Socket,
    ra: Vec<u8>,
    ifindex: u32,
    max_interval: Duration,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) {
    let dest = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
    // Periodic RAs between 1/3 and 1 × MaxRtrAdvInterval (RFC 4861 §6.2.4), spread by a cheap
    // per-round jitter; the first three go out within seconds so booting firmware finds a
    // router even before it solicits.
    let mut initial = 3u32;
    let mut last_sent: Option<Instant> = None;
    let mut next = Instant::now();
    let mut round: u64 = u64::from(ifindex);
    let mut buf = [0u8; 1500];
    while !cancel.is_cancelled() {
        let now = Instant::now();
        if now >= next {
            send(&sock, &ra, &dest, &stats);
            last_sent = Some(now);
            round = round.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let frac = 1.0 / 3.0 + (round >> 11) as f64 / (1u64 << 53) as f64 * (2.0 / 3.0);
            let period = if initial > 0 {
                initial -= 1;
                Duration::from_secs(4).min(max_interval)
            } else {
                max_interval.mul_f64(frac)
            };
            next = now + period;
            continue;
        }
        let wait = (next - now).clamp(Duration::from_millis(1), POLL);
        if sock.set_read_timeout(Some(wait)).is_err() {
            std::thread::sleep(wait);
            continue;
        }
        let n = match std::io::Read::read(&mut &sock, &mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                debug!(error = %e, "icmpv6 read failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if metal6_ra::parse_rs(&buf[..n]).is_ok() {
            stats.update(|s| s.rs_received += 1);
            // Answer at once unless we just sent one; then as soon as allowed.
            let earliest = last_sent.map_or_else(Instant::now, |t| t + MIN_DELAY_BETWEEN_RAS);
            next = next.min(earliest.max(Instant::now()));
        }
    }
}

fn send(sock: &Socket, ra: &[u8], dest: &SockAddr, stats: &Stats) {
    match sock.send_to(ra, dest) {
        Ok(_) => stats.update(|s| s.ra_sent += 1),
        Err(e) => warn!(error = %e, "router advertisement not sent"),
    }
}
