//! ISO 8601 durations as rotation policies use them (`P90D`, `P3M`, `PT48H`, `P1Y10D`).
//! Years count 365 days and months 30, as a policy's intent is calendar-approximate.

/// Parses a duration into seconds. Only non-negative whole numbers; `W` is accepted.
pub fn parse_seconds(text: &str) -> Option<i64> {
    let rest = text.strip_prefix('P').or_else(|| text.strip_prefix('p'))?;
    if rest.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut in_time = false;
    let mut any = false;
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            'T' | 't' if number.is_empty() && !in_time => in_time = true,
            _ => {
                let n: i64 = number.parse().ok()?;
                number.clear();
                let unit = match (in_time, c.to_ascii_uppercase()) {
                    (false, 'Y') => 365 * 86_400,
                    (false, 'M') => 30 * 86_400,
                    (false, 'W') => 7 * 86_400,
                    (false, 'D') => 86_400,
                    (true, 'H') => 3_600,
                    (true, 'M') => 60,
                    (true, 'S') => 1,
                    _ => return None,
                };
                total = total.checked_add(n.checked_mul(unit)?)?;
                any = true;
            }
        }
    }
    if !number.is_empty() || !any {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_seconds("P90D"), Some(90 * 86_400));
        assert_eq!(parse_seconds("P3M"), Some(90 * 86_400));
        assert_eq!(parse_seconds("PT48H"), Some(48 * 3_600));
        assert_eq!(parse_seconds("P1Y10D"), Some(375 * 86_400));
        assert_eq!(parse_seconds("P1DT1M"), Some(86_460));
        for bad in [
            "",
            "P",
            "90D",
            "P1X",
            "PT",
            "P1",
            "PT1D",
            "P99999999999999999999Y",
        ] {
            assert_eq!(parse_seconds(bad), None, "{bad}");
        }
    }
}
