//! Time, read once per operation and truncated to what both databases keep.

use time::OffsetDateTime;

/// Now in UTC, truncated to whole microseconds: Postgres `timestamptz` keeps microseconds, so a
/// value read back equals the value written (read-your-writes holds to the last digit).
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let micros = now.nanosecond() / 1_000 * 1_000;
    now.replace_nanosecond(micros).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_has_microsecond_precision() {
        assert_eq!(super::now().nanosecond() % 1_000, 0);
    }
}
