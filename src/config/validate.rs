//! Cross-field rules that serde cannot express: unique names, known upstreams,
//! ranges, URLs, the loopback rule for disabled auth.

use std::collections::HashSet;

use super::{err, Config, ConfigError};

impl Config {
    /// Checks every cross-field rule; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_auth()?;
        let names = self.validate_upstreams()?;
        self.validate_routes(&names)?;
        if self.failover.max_attempts == 0 {
            return Err(err("failover.max_attempts: expected at least 1"));
        }
        if !(0.0..=1.0).contains(&self.failover.budget_ratio) {
            return Err(err("failover.budget_ratio: expected a number from 0 to 1"));
        }
        if !(0.0..=1.0).contains(&self.outlier.error_rate) {
            return Err(err("outlier.error_rate: expected a number from 0 to 1"));
        }
        if self.outlier.consecutive_failures == 0 {
            return Err(err("outlier.consecutive_failures: expected at least 1"));
        }
        if let Some(url) = &self.alerts.webhook_url {
            check_url("alerts.webhook_url", url)?;
        }
        if let Some(o) = &self.otel {
            if !(0.0..=1.0).contains(&o.sample_ratio) {
                return Err(err("otel.sample_ratio: expected a number from 0 to 1"));
            }
        }
        if let Some(name) = &self.passthrough_route {
            if !self.routes.iter().any(|r| &r.name == name) {
                return Err(err(format!(
                    "passthrough_route: no route named {name:?}; expected one of the routes[].name"
                )));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(err("max_body_bytes: expected a positive number of bytes"));
        }
        if let Some(a) = &self.audit {
            if a.max_bytes == 0 || a.queue == 0 {
                return Err(err(
                    "audit: max_bytes and queue must be positive (e.g. max_bytes: 100MB, queue: 10000)",
                ));
            }
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let Some(auth) = &self.auth else {
            return Err(err(
                "auth: missing; list client keys under auth.keys, or write `auth: {disabled: true}` \
                 (loopback listeners only)",
            ));
        };
        if auth.disabled && !auth.keys.is_empty() {
            return Err(err("auth: `disabled: true` with keys listed; choose one"));
        }
        if !auth.disabled && auth.keys.is_empty() {
            return Err(err(
                "auth.keys: expected at least one key (or `auth: {disabled: true}`)",
            ));
        }
        if auth.disabled && !self.listen.ip().is_loopback() {
            return Err(err(format!(
                "listen: {} is not a loopback address, and auth is disabled: \
                 refusing to run an open proxy (add auth.keys or bind 127.0.0.1)",
                self.listen
            )));
        }
        let mut seen = HashSet::new();
        for (i, k) in auth.keys.iter().enumerate() {
            if !seen.insert(k.name.as_str()) {
                return Err(err(format!(
                    "auth.keys[{i}].name: duplicate name {:?}",
                    k.name
                )));
            }
            if k.rpm == Some(0) {
                return Err(err(format!(
                    "auth.keys[{i}].rpm: expected a positive number (omit it for no limit)"
                )));
            }
        }
        Ok(())
    }

    fn validate_upstreams(&self) -> Result<HashSet<&str>, ConfigError> {
        if self.upstreams.is_empty() {
            return Err(err("upstreams: expected at least one upstream"));
        }
        let mut names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = format!("upstreams[{i}]");
            if u.name.is_empty() || !names.insert(u.name.as_str()) {
                return Err(err(format!(
                    "{at}.name: expected a unique, non-empty name (got {:?})",
                    u.name
                )));
            }
            match (&u.base_url, &u.simulate) {
                (Some(url), _) => check_url(&format!("{at}.base_url"), url)?,
                (None, Some(_)) => {}
                (None, None) => {
                    return Err(err(format!(
                        "{at}.base_url: missing (required unless `simulate` is set)"
                    )))
                }
            }
            if u.health.timeout > u.health.interval {
                return Err(err(format!(
                    "{at}.health.timeout: {:?} exceeds health.interval {:?}; expected timeout <= interval",
                    u.health.timeout, u.health.interval
                )));
            }
            if u.health.interval.is_zero() || u.health.timeout.is_zero() {
                return Err(err(format!(
                    "{at}.health: interval and timeout must be positive"
                )));
            }
            if u.health.unhealthy_threshold == 0 || u.health.healthy_threshold == 0 {
                return Err(err(format!("{at}.health: thresholds must be at least 1")));
            }
            if let Some(sim) = &u.simulate {
                if let Some(r) = sim.fail_rate {
                    if !(0.0..=1.0).contains(&r) {
                        return Err(err(format!(
                            "{at}.simulate.fail_rate: expected a number from 0 to 1"
                        )));
                    }
                }
            }
            for (model, p) in &u.pricing {
                if p.input < 0.0 || p.output < 0.0 || !p.input.is_finite() || !p.output.is_finite()
                {
                    return Err(err(format!(
                        "{at}.pricing.{model}: expected non-negative USD per 1M tokens"
                    )));
                }
            }
        }
        Ok(names)
    }

    fn validate_routes(&self, upstreams: &HashSet<&str>) -> Result<(), ConfigError> {
        if self.routes.is_empty() {
            return Err(err("routes: expected at least one route"));
        }
        let mut names = HashSet::new();
        let known = |at: String, name: &str| {
            if upstreams.contains(name) {
                Ok(())
            } else {
                Err(err(format!(
                    "{at}: unknown upstream {name:?}; expected one of the names under `upstreams`"
                )))
            }
        };
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(err(format!(
                    "{at}.name: expected a unique, non-empty name (got {:?})",
                    r.name
                )));
            }
            if r.models.is_empty() {
                return Err(err(format!("{at}.models: expected at least one pattern")));
            }
            known(format!("{at}.primary"), &r.primary)?;
            let mut chain = HashSet::from([r.primary.as_str()]);
            for (j, f) in r.fallbacks.iter().enumerate() {
                known(format!("{at}.fallbacks[{j}]"), f)?;
                if !chain.insert(f.as_str()) {
                    return Err(err(format!(
                        "{at}.fallbacks[{j}]: {f:?} appears twice in the chain"
                    )));
                }
            }
            if let Some(s) = &r.split {
                known(format!("{at}.split.target"), &s.target)?;
                if !(0.0..=100.0).contains(&s.percentage) {
                    return Err(err(format!(
                        "{at}.split.percentage: expected a number from 0 to 100"
                    )));
                }
                if s.target == r.primary {
                    return Err(err(format!(
                        "{at}.split.target: the target must differ from the primary"
                    )));
                }
                if !(0.0..=1.0).contains(&s.auto_rollback.max_error_rate) {
                    return Err(err(format!(
                        "{at}.split.auto_rollback.max_error_rate: expected a number from 0 to 1"
                    )));
                }
                validate_progressive(&at, s)?;
            }
        }
        Ok(())
    }
}

/// Ramp, gates and shadow of one split (PRODUCT.md §3.9).
fn validate_progressive(at: &str, s: &super::SplitConfig) -> Result<(), ConfigError> {
    if let Some(r) = &s.ramp {
        if r.steps.is_empty() {
            return Err(err(format!(
                "{at}.split.ramp.steps: expected at least one step"
            )));
        }
        let mut last = 0.0;
        for (k, &p) in r.steps.iter().enumerate() {
            if !(0.0..=100.0).contains(&p) || p <= last {
                return Err(err(format!(
                    "{at}.split.ramp.steps[{k}]: expected rising numbers above 0 and at most 100"
                )));
            }
            last = p;
        }
        if r.bake.is_zero() {
            return Err(err(format!(
                "{at}.split.ramp.bake: expected a positive duration"
            )));
        }
    }
    if let Some(g) = &s.gates {
        if g.window.is_zero() {
            return Err(err(format!(
                "{at}.split.gates.window: expected a positive duration"
            )));
        }
        if !(0.0..=1.0).contains(&g.max_error_rate_increase) {
            return Err(err(format!(
                "{at}.split.gates.max_error_rate_increase: expected a number from 0 to 1"
            )));
        }
        if !(g.max_latency_ratio.is_finite() && g.max_latency_ratio > 0.0) {
            return Err(err(format!(
                "{at}.split.gates.max_latency_ratio: expected a positive number"
            )));
        }
    }
    if let Some(sh) = &s.shadow {
        if !(0.0..=100.0).contains(&sh.percentage) {
            return Err(err(format!(
                "{at}.split.shadow.percentage: expected a number from 0 to 100"
            )));
        }
    }
    Ok(())
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(err(format!(
            "{key}: {url:?} is not an http(s) URL; expected e.g. \"https://api.openai.com/v1\""
        ))),
    }
}
