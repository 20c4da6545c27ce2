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
