//! HTTP to `metal6 serve`: documents, the image stream (with Range to resume) and events.
//! ureq: blocking, small, no async runtime to carry into the initramfs; plain HTTP only
//! (the provisioning network is the trust boundary, and the image is verified by SHA-256).

use std::io::{self, Read};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::console::say;

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        // A stalled image stream fails and resumes; 2 GiB at 1 MB/s fits.
        .timeout_recv_body(Some(Duration::from_secs(2400)))
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn get_text(agent: &ureq::Agent, url: &str) -> Result<String> {
    let mut resp = agent.get(url).call().with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let body =
        resp.body_mut().with_config().limit(4 << 20).read_to_string().with_context(|| format!("reading {url}"))?;
    if status != 200 {
        bail!("GET {url}: HTTP {status}: {}", body.trim());
    }
    Ok(body)
}

/// The image at `url`, as a [`crate::disk::Source`]: each open is a GET from an offset.
#[derive(Debug)]
pub struct ImageSource<'a> {
    pub agent: &'a ureq::Agent,
    pub url: &'a str,
}

impl crate::disk::Source for ImageSource<'_> {
    fn open(&mut self, offset: u64) -> io::Result<(Box<dyn Read + '_>, u64)> {
        let mut req = self.agent.get(self.url);
        if offset > 0 {
            req = req.header("Range", format!("bytes={offset}-"));
        }
        let resp = req.call().map_err(io::Error::other)?;
        let status = resp.status().as_u16();
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let total = match (status, offset) {
            (200, 0) => header("content-length").and_then(|l| l.parse().ok()),
            (206, _) => header("content-range").and_then(|r| content_range_total(&r, offset)),
            _ => None,
        };
        let Some(total) = total else {
            return Err(io::Error::other(format!("GET {} from byte {offset}: unexpected HTTP {status}", self.url)));
        };
        if offset > 0 {
            say!("image stream resumed at byte {offset}");
        }
        Ok((Box::new(resp.into_body().into_reader()), total))
    }
}

/// `bytes START-END/TOTAL` → TOTAL, when START is the offset asked for.
pub fn content_range_total(v: &str, offset: u64) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    (start.parse::<u64>().ok()? == offset).then_some(())?;
    total.parse().ok()
}

/// Posts events to the node's timeline. Best effort: a lost event never stops an install,
/// but every failure is on the console.
#[derive(Debug)]
pub struct Reporter {
    agent: ureq::Agent,
    url: String,
}

impl Reporter {
    /// `events_url` of the node; `token` when the node may not be at its inventory address.
    pub fn new(agent: ureq::Agent, events_url: &str, token: Option<&str>) -> Self {
        let url = match token {
            Some(t) => format!("{events_url}?token={t}"),
            None => events_url.to_owned(),
        };
        Reporter { agent, url }
    }

    pub fn post(&self, event: &serde_json::Value) -> bool {
        let body = event.to_string();
        for attempt in 1..=3 {
            match self.agent.post(&self.url).header("content-type", "application/json").send(body.as_bytes()) {
                Ok(r) if r.status().as_u16() == 202 => return true,
                Ok(r) => {
                    say!("event not accepted: HTTP {}", r.status().as_u16());
                    return false;
                }
                Err(e) => say!("posting an event failed (attempt {attempt}): {e}"),
            }
            std::thread::sleep(Duration::from_secs(attempt));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_must_start_where_we_asked() {
        assert_eq!(content_range_total("bytes 100-199/1000", 100), Some(1000));
        assert_eq!(content_range_total("bytes 0-199/1000", 100), None);
        assert_eq!(content_range_total("bytes */1000", 100), None);
        assert_eq!(content_range_total("items 100-199/1000", 100), None);
    }
}
