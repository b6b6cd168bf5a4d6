//! Wall-clock stamps for `chat-client --timestamps`: `HH:MM:SS` for plain
//! lines and RFC 3339 for JSON, both in local time.
//!
//! libc's `localtime_r` does the time-zone work (the `TZ` variable and the
//! system's zone files), as `date` does; no other crate is needed for two
//! formats.

use std::time::{SystemTime, UNIX_EPOCH};

/// One instant, formatted both ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// `HH:MM:SS`, local time.
    pub clock: String,
    /// RFC 3339 with milliseconds and the local offset,
    /// `2026-11-29T07:05:36.123+01:00`.
    pub rfc3339: String,
}

impl Stamp {
    /// The current time.
    pub fn now() -> Stamp {
        Stamp::at(SystemTime::now())
    }

    /// The given time (before 1970 counts as 1970).
    pub fn at(time: SystemTime) -> Stamp {
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = libc::time_t::try_from(since_epoch.as_secs()).unwrap_or(libc::time_t::MAX);
        let millis = since_epoch.subsec_millis();
        // SAFETY: tm is plain data; localtime_r fills it from `seconds` and
        // only reads the time-zone state, which nothing here modifies.
        let (tm, ok) = unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            let ok = !libc::localtime_r(&seconds, &mut tm).is_null();
            (tm, ok)
        };
        if !ok {
            // Out of the C library's range: show UTC seconds rather than
            // nothing.
            return Stamp {
                clock: "??:??:??".into(),
                rfc3339: format!("{}", since_epoch.as_secs()),
            };
        }
        let offset_minutes = tm.tm_gmtoff / 60;
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let offset = offset_minutes.abs();
        Stamp {
            clock: format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec),
            rfc3339: format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}{sign}{:02}:{:02}",
                i64::from(tm.tm_year) + 1900,
                tm.tm_mon + 1,
                tm.tm_mday,
                tm.tm_hour,
                tm.tm_min,
                tm.tm_sec,
                offset / 60,
                offset % 60
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn both_forms_describe_the_same_instant() {
        let stamp = Stamp::at(UNIX_EPOCH + Duration::from_millis(1_764_400_000_123));
        let (date, rest) = stamp.rfc3339.split_once('T').unwrap();
        assert_eq!(date.len(), 10);
        assert_eq!(&rest[..8], stamp.clock);
        assert_eq!(&rest[8..12], ".123");
        let offset = &rest[12..];
        assert!(
            offset.starts_with(['+', '-']) && offset.len() == 6,
            "{offset}"
        );
        assert_eq!(stamp.clock.len(), 8);
        assert_eq!(stamp.clock.as_bytes()[2], b':');
    }
}
