//! Send windows (quiet hours), in the recipient's time zone when known: Russia spans eleven zones,
//! so "09:00–21:00" must mean the customer's 09:00, not the hub's.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::WindowConfig;

#[derive(Debug, Clone)]
pub struct SendWindow {
    start: NaiveTime,
    end: NaiveTime,
    default_tz: Tz,
}

impl SendWindow {
    pub fn parse(c: &WindowConfig) -> Result<SendWindow, String> {
        let time = |v: &str| {
            NaiveTime::parse_from_str(v, "%H:%M").map_err(|_| format!("`{v}` is not HH:MM"))
        };
        let start = time(&c.start)?;
        let end = time(&c.end)?;
        if start == end {
            return Err("start and end are equal: the window would be empty".into());
        }
        let default_tz = c
            .timezone
            .parse::<Tz>()
            .map_err(|_| format!("`{}` is not an IANA time zone", c.timezone))?;
        Ok(SendWindow {
            start,
            end,
            default_tz,
        })
    }

    fn zone(&self, tz: Option<&str>) -> Tz {
        tz.and_then(|t| t.parse().ok()).unwrap_or(self.default_tz)
    }

    fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            // Across midnight, e.g. 22:00–06:00.
            t >= self.start || t < self.end
        }
    }

    /// `None` when sending is allowed at `now`; otherwise when the window next opens.
    pub fn next_open(&self, now: DateTime<Utc>, tz: Option<&str>) -> Option<DateTime<Utc>> {
        let zone = self.zone(tz);
        let local = now.with_timezone(&zone);
        if self.contains(local.time()) {
            return None;
        }
        let mut day = local.date_naive();
        if local.time() >= self.start {
            day = day.succ_opt()?;
        }
        // A start inside a DST gap does not exist that day: the first instant after it does.
        let mut naive = day.and_time(self.start);
        for _ in 0..4 {
            if let Some(t) = zone.from_local_datetime(&naive).earliest() {
                return Some(t.with_timezone(&Utc));
            }
            naive += Duration::minutes(30);
        }
        Some(now + Duration::hours(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: &str, end: &str) -> SendWindow {
        SendWindow::parse(&WindowConfig {
            start: start.into(),
            end: end.into(),
            timezone: "Europe/Moscow".into(),
        })
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn inside_the_window_sends_now() {
        // 10:00 UTC is 13:00 in Moscow.
        assert_eq!(
            window("09:00", "21:00").next_open(utc("2026-03-10T10:00:00Z"), None),
            None
        );
    }

    #[test]
    fn after_the_window_waits_for_tomorrow_morning() {
        // 19:00 UTC is 22:00 in Moscow: next open is 09:00 MSK = 06:00 UTC next day.
        let next = window("09:00", "21:00").next_open(utc("2026-03-10T19:00:00Z"), None);
        assert_eq!(next, Some(utc("2026-03-11T06:00:00Z")));
    }

    #[test]
    fn before_the_window_waits_for_this_morning() {
        let next = window("09:00", "21:00").next_open(utc("2026-03-10T03:00:00Z"), None);
        assert_eq!(next, Some(utc("2026-03-10T06:00:00Z")));
    }

    #[test]
    fn the_recipients_zone_wins() {
        // 10:00 UTC is 20:00 in Vladivostok (UTC+10): open until 21:00 there.
        let w = window("09:00", "21:00");
        assert_eq!(
            w.next_open(utc("2026-03-10T10:00:00Z"), Some("Asia/Vladivostok")),
            None
        );
        // 12:00 UTC is 22:00 there: next 09:00 Vladivostok = 23:00 UTC.
        assert_eq!(
            w.next_open(utc("2026-03-10T12:00:00Z"), Some("Asia/Vladivostok")),
            Some(utc("2026-03-10T23:00:00Z"))
        );
    }

    #[test]
    fn a_window_across_midnight() {
        let w = window("22:00", "06:00");
        assert_eq!(w.next_open(utc("2026-03-10T20:00:00Z"), None), None); // 23:00 MSK
        assert_eq!(
            w.next_open(utc("2026-03-10T10:00:00Z"), None), // 13:00 MSK
            Some(utc("2026-03-10T19:00:00Z"))
        );
    }

    #[test]
    fn bad_windows_are_refused() {
        let bad = |s: &str, e: &str, tz: &str| {
            SendWindow::parse(&WindowConfig {
                start: s.into(),
                end: e.into(),
                timezone: tz.into(),
            })
            .is_err()
        };
        assert!(bad("9am", "21:00", "Europe/Moscow"));
        assert!(bad("09:00", "09:00", "Europe/Moscow"));
        assert!(bad("09:00", "21:00", "Moscow"));
    }
}
