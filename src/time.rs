//! Wall-clock times as edgehead writes them: RFC 3339 with milliseconds (UTC) in
//! payloads, whole seconds since the Unix epoch in stored files.

use std::time::SystemTime;

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-12-03T09:05:17.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Seconds since the Unix epoch now (0 if the clock is before it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
