//! Client keys: who is calling. Keys come from env vars; a presented key is
//! hashed and compared in constant time against every configured digest, so
//! neither timing nor early exit tells which key (or how much of it) matched.

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, Secrets};

/// The authenticated caller, stored as a request extension.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// Index in `auth.keys`.
    pub index: usize,
    /// Key name (bounded label, split key of last resort).
    pub name: Arc<str>,
}

/// All configured client keys, as digests.
#[derive(Clone)]
pub struct ClientKeys {
    disabled: bool,
    keys: Arc<[([u8; 32], Arc<str>)]>,
}

impl ClientKeys {
    /// From the config and the resolved secrets.
    pub fn new(cfg: &Config, secrets: &Secrets) -> Self {
        let disabled = cfg.auth.as_ref().is_none_or(|a| a.disabled);
        let keys = cfg
            .auth
            .iter()
            .flat_map(|a| a.keys.iter())
            .zip(&secrets.client_keys)
            .map(|(k, s)| (digest(&s.0), Arc::from(k.name.as_str())))
            .collect();
        Self { disabled, keys }
    }

    /// True when `auth: {disabled: true}`.
    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// Finds the key in the request headers (`Authorization: Bearer`, `x-api-key`, `api-key`).
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<ClientIdentity> {
        self.check(presented_key(headers)?)
    }

    /// Checks one presented key.
    pub fn check(&self, presented: &str) -> Option<ClientIdentity> {
        let d = digest(presented);
        let mut found = None;
        for (i, (k, name)) in self.keys.iter().enumerate() {
            if bool::from(k.ct_eq(&d)) {
                found = Some(ClientIdentity {
                    index: i,
                    name: name.clone(),
                });
            }
        }
        found
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The key a client presented, from the usual headers.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        return Some(token.trim()).filter(|t| !t.is_empty());
    }
    ["x-api-key", "api-key"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn matches_only_the_right_key() {
        let cfg = Config::from_yaml(
            "listen: 127.0.0.1:0\nauth: {keys: [{name: a, key_env: A}, {name: b, key_env: B}]}\nupstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1'}]\nroutes: [{name: r, models: ['*'], primary: u}]\n",
        )
        .unwrap();
        let secrets = Secrets {
            client_keys: vec![Secret("ka".into()), Secret("kb".into())],
            ..Default::default()
        };
        let keys = ClientKeys::new(&cfg, &secrets);
        assert_eq!(&*keys.check("kb").unwrap().name, "b");
        assert!(keys.check("kc").is_none());
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer ka".parse().unwrap());
        assert_eq!(&*keys.authenticate(&h).unwrap().name, "a");
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "kb".parse().unwrap());
        assert_eq!(keys.authenticate(&h).unwrap().index, 1);
    }
}
