//! Per-link delay with netem, where the kernel has it (`sch_netem`; this machine's host kernel
//! does not, Debian's does as a module): a `netem` root qdisc on both ends of every ISL, its
//! latency the link's one-way propagation delay, replaced in place each update (the kernel
//! changes a root qdisc of the same kind without re-grafting it).
//!
//! Built by hand: rtnetlink has no netem options. `TCA_OPTIONS` of netem is the fixed
//! `struct tc_netem_qopt` followed by attributes; the delay goes in `TCA_NETEM_LATENCY64`
//! (nanoseconds), which the kernel prefers over the struct's tick-based field.

use futures_util::StreamExt;
use rtnetlink::packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage};

const TCA_OPTIONS: u16 = 2;
const TCA_NETEM_LATENCY64: u16 = 10;
/// netem's default queue, as `tc` sets it.
const LIMIT: u32 = 1000;

/// The `TCA_OPTIONS` payload: `tc_netem_qopt` { latency, limit, loss, gap, duplicate, jitter }
/// then `TCA_NETEM_LATENCY64`.
pub fn options(delay_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    for v in [0u32, LIMIT, 0, 0, 0, 0] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    out.extend_from_slice(&12u16.to_ne_bytes()); // nla_len: 4 + 8
    out.extend_from_slice(&TCA_NETEM_LATENCY64.to_ne_bytes());
    out.extend_from_slice(&i64::try_from(delay_ns).unwrap_or(i64::MAX).to_ne_bytes());
    out
}

/// Sets (or replaces) the root netem qdisc of `ifindex` with this one-way delay.
pub async fn set_delay(mut h: rtnetlink::Handle, ifindex: u32, delay_ns: u64) -> Result<(), rtnetlink::Error> {
    let mut m = TcMessage::with_index(i32::try_from(ifindex).unwrap_or(i32::MAX));
    m.header.parent = TcHandle::ROOT;
    m.attributes.push(TcAttribute::Kind("netem".into()));
    m.attributes.push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options(delay_ns))));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(m));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    let mut resp = h.request(req)?;
    while let Some(msg) = resp.next().await {
        if let NetlinkPayload::Error(e) = msg.payload
            && e.code.is_some()
        {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_are_the_struct_then_latency64() {
        let o = super::options(4_200_000);
        assert_eq!(o.len(), 24 + 12);
        assert_eq!(u32::from_ne_bytes([o[4], o[5], o[6], o[7]]), 1000, "limit");
        assert_eq!(u16::from_ne_bytes([o[26], o[27]]), 10, "TCA_NETEM_LATENCY64");
        assert_eq!(i64::from_ne_bytes(o[28..36].try_into().expect("8 bytes")), 4_200_000);
    }
}
