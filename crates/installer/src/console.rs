//! The installer's voice: one line per step on the console (the serial port in the lab, the
//! iDRAC virtual console on a Dell), prefixed with seconds since the kernel started so a
//! reader of a boot log sees where time went.

/// Seconds since boot, from /proc/uptime (0 where there is none, as in unit tests).
pub fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
        .unwrap_or(0.0)
}

/// Prints one console line. The installer has no log daemon: stderr is the console.
#[allow(clippy::print_stderr)] // the console is this program's user interface
pub fn line(msg: &str) {
    eprintln!("[{:8.2}] metal6-installer: {msg}", uptime());
}

macro_rules! say {
    ($($t:tt)*) => { $crate::console::line(&format!($($t)*)) };
}
pub(crate) use say;
