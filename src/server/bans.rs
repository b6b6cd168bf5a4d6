//! Names the operator keeps out (`ban NAME [DURATION]`, `unban NAME`).
//!
//! A kick only ends a session; a `--reconnect` client is back within a
//! second. A ban refuses every login to the name until it ends, whatever
//! the client and however often it tries. A single server keeps its bans
//! here, in memory, for its life; in a cluster they live in Redis instead
//! (`pmchat:ban:NAME`, expiring with the ban), so every node refuses the
//! name at its claim and any node's operator can lift it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The banned names and when each ban ends (`None`: when lifted).
#[derive(Debug, Default)]
pub(crate) struct Bans {
    names: Mutex<HashMap<Box<str>, Option<Instant>>>,
}

impl Bans {
    /// Bans `name` for `duration` (`None`: until unbanned), replacing any
    /// ban it had.
    pub(crate) fn ban(&self, name: &str, duration: Option<Duration>, now: Instant) {
        let until = duration.map(|d| now + d);
        self.lock().insert(name.into(), until);
    }

    /// Lifts `name`'s ban; false if it had none (or it had run out).
    pub(crate) fn unban(&self, name: &str, now: Instant) -> bool {
        let lifted = self.lock().remove(name);
        lifted.is_some_and(|until| until.is_none_or(|until| until > now))
    }

    /// True if `name` is banned at `now`. A ban that ran out is forgotten.
    pub(crate) fn is_banned(&self, name: &str, now: Instant) -> bool {
        let mut names = self.lock();
        match names.get(name) {
            None => false,
            Some(Some(until)) if *until <= now => {
                names.remove(name);
                false
            }
            Some(_) => true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Option<Instant>>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Parses a ban's duration: `30s`, `10m`, `2h`, `7d`, or anything
/// [`crate::args::parse_duration`] reads.
pub fn parse_ban_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let hours = |number: &str, factor: u64| {
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("'{text}' is not a duration (try 10m, 2h or 7d)"))
    };
    if let Some(number) = text.strip_suffix('h') {
        return hours(number, 3600);
    }
    if let Some(number) = text.strip_suffix('d') {
        return hours(number, 86_400);
    }
    crate::args::parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_holds_until_it_ends_or_is_lifted() {
        let bans = Bans::default();
        let now = Instant::now();
        bans.ban("bob", Some(Duration::from_secs(60)), now);
        bans.ban("eve", None, now);
        assert!(bans.is_banned("bob", now + Duration::from_secs(59)));
        assert!(!bans.is_banned("bob", now + Duration::from_secs(60)));
        assert!(bans.is_banned("eve", now + Duration::from_secs(86_400 * 365)));
        assert!(!bans.is_banned("alice", now));
        assert!(bans.unban("eve", now));
        assert!(!bans.is_banned("eve", now));
        assert!(!bans.unban("eve", now));
    }

    #[test]
    fn ban_durations_read_hours_and_days() {
        assert_eq!(parse_ban_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_ban_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_ban_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_ban_duration("soon").is_err());
        assert!(parse_ban_duration("xh").is_err());
    }
}
