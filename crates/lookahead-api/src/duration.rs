//! Durations as the CRDs and the router configuration write them (`300ms`, `30s`, `2m`, `2h`):
//! parsed and formatted here, for the resources and the router configuration alike.

use std::time::Duration;

/// Parses `300ms`, `30s`, `2m` (what the CRD's pattern admits).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("duration {s:?} lacks a unit (ms, s, m)"))?;
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} has no number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("duration {s:?}: unknown unit {unit:?} (ms, s, m)")),
    }
}

/// Parses the whole-second durations of fields Kubernetes itself counts in seconds (a Job's
/// deadline, a probe's timeout): `90s`, `10m`, `2h` (what their CRD patterns admit), at least
/// one second.
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "" => return Err(format!("duration {s:?} lacks a unit (s, m, h)")),
        _ => return Err(format!("duration {s:?}: unknown unit {unit:?} (s, m, h)")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} has no number, or one too large"))?;
    match n.checked_mul(scale) {
        Some(0) => Err(format!("duration {s:?}: must be at least 1s")),
        Some(secs) => Ok(secs),
        None => Err(format!("duration {s:?} is too long")),
    }
}

/// Formats a duration the way `parse_duration` reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
