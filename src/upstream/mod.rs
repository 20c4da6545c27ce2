//! The HTTP client of each upstream: URL building, header allowlist, key injection, timeouts.
//!
//! The client's own credentials (`authorization`, `x-api-key`, `api-key`,
//! cookies) and hop-by-hop headers never reach an upstream: only the headers on
//! the allowlist are copied, and the upstream's own key is added.

mod body;
mod client;
mod pool;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http_body_util::Full;

pub use client::{
    describe, install_crypto, send_error_outcome, BodyStream, HttpClient, ResponseBody, SendError,
    UpstreamBody,
};
use pool::Pool;

use crate::config::{AuthHeader, PriceConfig, Secret, TimeoutsConfig, UpstreamConfig};

/// One configured provider, ready to be called.
#[derive(Debug)]
pub struct Upstream {
    /// Config name.
    pub name: Arc<str>,
    /// Its entry points: one for a `base_url`, several for `endpoints`
    /// (same key, same models; PRODUCT.md §3.10).
    pub endpoints: Box<[Endpoint]>,
    /// Pooled keep-alive client of its `https://` endpoints, with this
    /// upstream's connect timeout (hyper keeps one pool per host, so each
    /// endpoint has its own connections). `http://` endpoints have their own
    /// [`Pool`].
    client: HttpClient,
    /// The upstream's key, as the header it expects (`upstreams[].auth_header`).
    auth: Option<(HeaderName, HeaderValue)>,
    /// Client model name → this upstream's name.
    pub model_map: HashMap<String, String>,
    /// Timeouts of calls to it.
    pub timeouts: TimeoutsConfig,
    /// USD per 1M tokens by model name (the config's `pricing` without `*`).
    /// Kept apart from the default: a finished request prices its serving
    /// and its primary upstream, and an empty map answers without hashing
    /// the model name.
    pricing: HashMap<String, PriceConfig>,
    /// `pricing["*"]`: the price of every other model.
    price_default: Option<PriceConfig>,
}

/// One entry point of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    /// Its name in `endpoints` (the upstream's own name for a plain `base_url`).
    pub name: Arc<str>,
    /// `base_url` without a trailing slash.
    pub base_url: String,
    /// What a request's URI starts with: `base_url` for hyper-util's pool,
    /// only its path for an own [`Pool`] (which sends origin-form targets).
    prefix: String,
    /// URIs of the usual endpoints, parsed once (see [`PARSED_SUFFIXES`]).
    parsed: Vec<(&'static str, Uri)>,
    /// Its own keep-alive connections, for an `http://` base URL.
    pool: Option<Arc<Pool>>,
}

impl Endpoint {
    /// An entry point at `base_url`; `connect_timeout` bounds each new connection.
    pub fn new(name: &str, base_url: &str, connect_timeout: Duration) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let pool = Uri::try_from(base_url.as_str())
            .ok()
            .and_then(|u| Some((Pool::new(&u, connect_timeout, client::TCP_KEEPALIVE)?, u)));
        let (pool, prefix) = match pool {
            Some((p, u)) => (Some(Arc::new(p)), u.path().trim_end_matches('/').to_owned()),
            None => (None, base_url.clone()),
        };
        let mut ep = Self {
            name: name.into(),
            base_url,
            prefix,
            parsed: Vec::new(),
            pool,
        };
        ep.parsed = PARSED_SUFFIXES
            .iter()
            .filter_map(|&s| Some((s, Uri::try_from(ep.target(s)).ok()?)))
            .collect();
        ep
    }

    /// `{prefix}{suffix}`, where `suffix` is the client's path after `/v1` (with its query).
    fn target(&self, suffix: &str) -> String {
        let mut u = String::with_capacity(self.prefix.len() + suffix.len());
        u.push_str(&self.prefix);
        u.push_str(suffix);
        u
    }

    /// The request URI of an endpoint: pre-parsed for the usual ones.
    fn uri(&self, suffix: &str) -> Result<Uri, axum::http::Error> {
        match self.parsed.iter().find(|(s, _)| *s == suffix) {
            Some((_, u)) => Ok(u.clone()),
            None => Ok(Uri::try_from(self.target(suffix))?),
        }
    }
}

/// A response head is on its way (or the send failed).
pub type ResponseFuture = BoxFuture<'static, Result<axum::http::Response<ResponseBody>, SendError>>;

/// Endpoints whose full URL is parsed at start: an attempt then clones a
/// `Uri` (reference-counted parts) instead of parsing a string. Other paths
/// are parsed per request.
const PARSED_SUFFIXES: [&str; 5] = [
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/responses",
    "/models",
];

impl Upstream {
    /// Builds the client. `endpoints` are `(name, base_url)` pairs, resolved
    /// (a simulated upstream's address is known only at start).
    pub fn new(
        cfg: &UpstreamConfig,
        endpoints: &[(String, String)],
        key: Option<&Secret>,
    ) -> Result<Self, String> {
        // Turnout is the only layer that retries; redirects are not followed and
        // proxy env vars are ignored (a server's HTTP(S)_PROXY is usually meant
        // for other tools): see README.
        let client = client::build(cfg.timeouts.connect)
            .map_err(|e| format!("upstream {}: cannot build HTTP client: {e}", cfg.name))?;
        let auth = match key {
            Some(k) => {
                let (name, text) = match cfg.auth_header {
                    AuthHeader::Authorization => (header::AUTHORIZATION, format!("Bearer {}", k.0)),
                    AuthHeader::XApiKey => (HeaderName::from_static("x-api-key"), k.0.clone()),
                };
                let mut v = HeaderValue::from_str(&text).map_err(|_| {
                    format!(
                        "upstream {}: the key in {} is not a valid header value",
                        cfg.name,
                        cfg.api_key_env.as_deref().unwrap_or("?")
                    )
                })?;
                v.set_sensitive(true);
                Some((name, v))
            }
            None => None,
        };
        if endpoints.is_empty() {
            return Err(format!("upstream {}: no base_url", cfg.name));
        }
        Ok(Self {
            name: cfg.name.as_str().into(),
            endpoints: endpoints
                .iter()
                .map(|(n, u)| Endpoint::new(n, u, cfg.timeouts.connect))
                .collect(),
            client,
            auth,
            model_map: cfg.model_map.clone().into_iter().collect(),
            timeouts: cfg.timeouts.clone(),
            pricing: (cfg.pricing.iter())
                .filter(|(model, _)| *model != "*")
                .map(|(model, price)| (model.clone(), *price))
                .collect(),
            price_default: cfg.pricing.get("*").copied(),
        })
    }

    /// True when it has several endpoints (then metrics carry an `endpoint` label).
    pub fn has_endpoints(&self) -> bool {
        self.endpoints.len() > 1
    }

    /// The `endpoint` label of endpoint `i`: empty (dropped from the
    /// exposition) for an upstream with a single `base_url`.
    pub fn endpoint_label(&self, i: usize) -> &str {
        if self.has_endpoints() {
            self.endpoints.get(i).map_or("", |e| &*e.name)
        } else {
            ""
        }
    }

    /// Sends a request to endpoint `endpoint` (an index into
    /// [`Upstream::endpoints`]; the first when out of range) with the
    /// allowlisted client headers (`None`: none, a probe), this upstream's
    /// key and the body.
    pub fn request(
        &self,
        endpoint: usize,
        method: Method,
        suffix: &str,
        headers: Option<&HeaderMap>,
        body: UpstreamBody,
    ) -> Result<ResponseFuture, axum::http::Error> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        let ep = self.endpoints.get(endpoint).unwrap_or(&self.endpoints[0]);
        *req.uri_mut() = ep.uri(suffix)?;
        let h = req.headers_mut();
        if let Some(headers) = headers {
            h.clone_from(headers);
        }
        if let Some((name, value)) = &self.auth {
            h.insert(name.clone(), value.clone());
        }
        Ok(match &ep.pool {
            Some(pool) => {
                let pool = pool.clone();
                Box::pin(async move {
                    match pool.send(req).await {
                        Ok(rsp) => Ok(rsp.map(ResponseBody::Pooled)),
                        Err(e) => Err(SendError::Pooled(e)),
                    }
                })
            }
            None => Box::pin(self.client.request(req).map(|r| match r {
                Ok(rsp) => Ok(rsp.map(ResponseBody::Shared)),
                Err(e) => Err(SendError::Shared(e)),
            })),
        })
    }

    /// Sends a GET (health probe, model list) to one endpoint with this upstream's key.
    pub fn get(&self, endpoint: usize, suffix: &str) -> Result<ResponseFuture, axum::http::Error> {
        self.request(endpoint, Method::GET, suffix, None, whole(Bytes::new()))
    }

    /// The model name this upstream knows for a client's model name.
    pub fn map_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.model_map.get(model).map_or(model, String::as_str)
    }

    /// Price of a model here (exact name, else `*`).
    pub fn price(&self, model: &str) -> Option<PriceConfig> {
        self.pricing.get(model).copied().or(self.price_default)
    }
}

/// A whole request body.
pub fn whole(body: Bytes) -> UpstreamBody {
    UpstreamBody::Left(Full::new(body))
}

/// Client headers that may reach an upstream. Everything else is dropped:
/// credentials, cookies, hop-by-hop headers, `host`, `content-length` (recomputed).
fn forwardable(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-type"
            | "accept"
            | "user-agent"
            | "x-request-id"
            | "idempotency-key"
            | "range"
            | "if-match"
            | "if-none-match"
            | "if-modified-since"
            | "if-unmodified-since"
    ) || n.starts_with("openai-")
        || n.starts_with("x-stainless-")
        || n.starts_with("anthropic-")
        || n.starts_with("x-mock-")
}

/// The allowlisted subset of the client's headers; `json`: a JSON body
/// without a `content-type` gets `application/json`.
pub fn forward_headers(client: &HeaderMap, json: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(8);
    for (k, v) in client {
        if forwardable(k) {
            out.append(k.clone(), v.clone());
        }
    }
    if json && !out.contains_key(header::CONTENT_TYPE) {
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    out
}

/// Upstream response headers a client may see: all but hop-by-hop ones
/// (RFC 9110 §7.6.1), the provider's cookies and `alt-svc` (they speak of
/// the provider's host, not Turnout's), and `content-length` unless `length`
/// (a body passed through byte for byte keeps it; a relayed stream may
/// gain an error event).
pub fn client_visible(name: &HeaderName, length: bool) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "set-cookie"
            | "alt-svc"
            | "date"
            | "server"
    ) && (length || name != header::CONTENT_LENGTH)
}

/// The client-visible subset of an upstream's response headers, made in
/// place: the few names a client must not see are removed from the map the
/// upstream's answer already built, rather than every other header being
/// hashed and copied into a new one (a provider sends 10–20 headers, of
/// which one or two, `date` and `server`, are dropped).
pub fn visible_headers(mut h: HeaderMap, length: bool) -> HeaderMap {
    /// Names removed without a second pass; more than this (never seen from
    /// a real provider) rebuilds the map.
    const FEW: usize = 8;
    let mut hidden: [Option<HeaderName>; FEW] = Default::default();
    let mut n = 0;
    {
        // Headers the upstream named in `Connection` are hop-by-hop too.
        let named = h.get(header::CONNECTION).and_then(|v| v.to_str().ok());
        for k in h.keys() {
            if !client_visible(k, length) || hop_listed(named, k) {
                if n == FEW {
                    return rebuilt(&h, length);
                }
                hidden[n] = Some(k.clone());
                n += 1;
            }
        }
    }
    for name in hidden.iter().take(n).flatten() {
        h.remove(name);
    }
    h
}

/// [`visible_headers`] by copying what is kept into a new map.
fn rebuilt(h: &HeaderMap, length: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    let named = h.get(header::CONNECTION).and_then(|v| v.to_str().ok());
    for (k, v) in h {
        if client_visible(k, length) && !hop_listed(named, k) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// Whether the upstream's `Connection` header (`named`) lists `k`: then `k`
/// is hop-by-hop too (RFC 9110 §7.6.1).
fn hop_listed(named: Option<&str>, k: &HeaderName) -> bool {
    named.is_some_and(|c| {
        c.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(k.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priced(pricing: &str) -> Upstream {
        let yaml = format!("{{name: a, base_url: 'http://127.0.0.1:1/v1', pricing: {pricing}}}");
        let cfg: UpstreamConfig = serde_yaml::from_str(&yaml).unwrap();
        let ends = [("a".to_owned(), "http://127.0.0.1:1/v1".to_owned())];
        Upstream::new(&cfg, &ends, None).unwrap()
    }

    #[test]
    fn a_model_is_priced_by_name_else_by_the_default() {
        let p = |input| Some(PriceConfig { input, output: 1.0 });
        let both = priced("{'*': {input: 2, output: 1}, m1: {input: 3, output: 1}}");
        assert_eq!(both.price("m1"), p(3.0));
        assert_eq!(both.price("other"), p(2.0));
        assert_eq!(both.price("*"), p(2.0));
        let default_only = priced("{'*': {input: 2, output: 1}}");
        assert_eq!(default_only.price("m1"), p(2.0));
        let named_only = priced("{m1: {input: 3, output: 1}}");
        assert_eq!(named_only.price("m1"), p(3.0));
        assert_eq!(named_only.price("other"), None);
        assert_eq!(priced("{}").price("m1"), None);
    }

    #[test]
    fn credentials_never_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer client"),
            ("x-api-key", "k"),
            ("api-key", "k"),
            ("cookie", "c"),
            ("proxy-authorization", "p"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("host", "x"),
            ("content-type", "application/json"),
            ("openai-beta", "assistants=v2"),
            ("x-stainless-lang", "python"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = forward_headers(&h, true);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(out.contains_key("openai-beta") && out.contains_key("x-stainless-lang"));
        assert!(!forward_headers(&HeaderMap::new(), false).contains_key("content-type"));
    }

    #[test]
    fn response_headers_pass_except_hop_by_hop() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-remaining-requests", "99"),
            ("openai-organization", "org"),
            ("x-request-id", "req_1"),
            ("content-length", "12"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "a=b"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let names = |m: HeaderMap| {
            let mut v: Vec<String> = m.keys().map(|k| k.to_string()).collect();
            v.sort();
            v
        };
        let kept = [
            "openai-organization",
            "x-ratelimit-remaining-requests",
            "x-request-id",
        ];
        assert_eq!(names(visible_headers(h.clone(), false)), kept);
        assert_eq!(names(rebuilt(&h, false)), kept);
        assert!(visible_headers(h.clone(), true).contains_key("content-length"));
        // Past the in-place limit: the map is rebuilt, with the same result.
        let mut many = h.clone();
        for i in 0..10 {
            let name = HeaderName::from_bytes(format!("x-gone-{i}").as_bytes()).unwrap();
            many.append(name.clone(), HeaderValue::from_static("1"));
            let listed = format!("{}, {name}", many[header::CONNECTION].to_str().unwrap());
            many.insert(header::CONNECTION, HeaderValue::from_str(&listed).unwrap());
        }
        assert_eq!(names(visible_headers(many, false)), kept);
        // Repeated values of a kept name all stay; of a dropped one all go.
        let mut twice = h.clone();
        twice.append("x-request-id", HeaderValue::from_static("req_2"));
        twice.append("set-cookie", HeaderValue::from_static("c=d"));
        let out = visible_headers(twice, false);
        assert_eq!(out.get_all("x-request-id").iter().count(), 2);
        assert!(!out.contains_key("set-cookie"));
    }
}
