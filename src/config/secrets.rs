//! Secrets are read from env vars named in the config, once at start.
//!
//! Values never appear in a `Debug` output, an error or a log line: errors name
//! the variable only.

use super::{err, Config, ConfigError};

/// Where env vars come from; tests pass a map instead of mutating the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads a process env var; empty counts as unset.
pub fn resolve_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A secret value whose `Debug` is redacted.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Every secret the config names, resolved.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Admin bearer token; `None` = admin API disabled (403).
    pub admin_token: Option<Secret>,
    /// Client keys, in `auth.keys` order.
    pub client_keys: Vec<Secret>,
    /// Upstream keys, in `upstreams` order; `None` where no `api_key_env` is set.
    pub upstream_keys: Vec<Option<Secret>>,
    /// The Redis URL (it may carry a password); `None` without `redis`.
    pub redis_url: Option<Secret>,
    /// OTLP endpoint (`otel.endpoint_env`); `None` = tracing off. Treated as
    /// a secret: a collector URL may carry credentials.
    pub otel_endpoint: Option<Secret>,
}

impl Secrets {
    /// Resolves every variable; a missing client or upstream key is an error naming it.
    pub fn resolve(cfg: &Config, env: EnvLookup<'_>) -> Result<Self, ConfigError> {
        let missing = |key: String, var: &str| {
            err(format!(
                "{key}: env var {var} is not set (it must hold the secret; the config names only the variable)"
            ))
        };
        let mut client_keys = Vec::new();
        if let Some(auth) = &cfg.auth {
            for (i, k) in auth.keys.iter().enumerate() {
                let v = env(&k.key_env)
                    .ok_or_else(|| missing(format!("auth.keys[{i}].key_env"), &k.key_env))?;
                client_keys.push(Secret(v));
            }
        }
        let mut upstream_keys = Vec::new();
        for (i, u) in cfg.upstreams.iter().enumerate() {
            let key = match &u.api_key_env {
                Some(var) => {
                    Some(Secret(env(var).ok_or_else(|| {
                        missing(format!("upstreams[{i}].api_key_env"), var)
                    })?))
                }
                None => None,
            };
            upstream_keys.push(key);
        }
        let redis_url = match &cfg.redis {
            Some(r) => {
                Some(Secret(env(&r.url_env).ok_or_else(|| {
                    missing("redis.url_env".into(), &r.url_env)
                })?))
            }
            None => None,
        };
        let admin_token = env(&cfg.admin.token_env).map(Secret);
        if admin_token.is_none() && !cfg.admin.listen.ip().is_loopback() {
            return Err(err(format!(
                "admin.listen: {} is not loopback and {} is unset; refusing to expose an admin listener without a token",
                cfg.admin.listen, cfg.admin.token_env
            )));
        }
        let otel_endpoint = cfg
            .otel
            .as_ref()
            .and_then(|o| env(&o.endpoint_env))
            .map(Secret);
        Ok(Self {
            admin_token,
            client_keys,
            upstream_keys,
            redis_url,
            otel_endpoint,
        })
    }
}
