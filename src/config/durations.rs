//! Durations in config: `"250ms"`, `"5s"`, `"2m"`, or a number of seconds.

/// `"250ms"`, `"5s"`, `"2m"` (humantime), or a bare number of seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// serde `with` entry point.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => humantime::parse_duration(s.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); expected e.g. \"250ms\", \"5s\", \"2m\""
                ))
            }),
            Raw::Secs(n) if n >= 0.0 && n.is_finite() => Ok(Duration::from_secs_f64(n)),
            Raw::Secs(n) => Err(serde::de::Error::custom(format!(
                "invalid duration {n}; expected e.g. \"250ms\", \"5s\", \"2m\""
            ))),
        }
    }
}

/// Optional duration.
pub mod duration_opt {
    use std::time::Duration;

    use serde::Deserializer;

    /// serde `with` entry point.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// Sizes in config: `"100MB"`, `"512KB"`, `"1GiB"` (powers of 1000 for KB/MB/GB,
/// of 1024 for KiB/MiB/GiB), or a bare number of bytes.
pub mod byte_size {
    use serde::{Deserialize, Deserializer};

    /// serde `with` entry point.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(n),
            Raw::Text(s) => parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {s:?}; expected e.g. \"100MB\", \"512KiB\" or a number of bytes"
                ))
            }),
        }
    }

    /// `"100MB"` → 100_000_000.
    pub fn parse(s: &str) -> Option<u64> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "mb" | "m" => 1_000_000,
            "gb" | "g" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(mult)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn sizes() {
            assert_eq!(super::parse("100MB"), Some(100_000_000));
            assert_eq!(super::parse("2 KiB"), Some(2048));
            assert_eq!(super::parse("17"), Some(17));
            assert_eq!(super::parse("12 parsecs"), None);
        }
    }
}
