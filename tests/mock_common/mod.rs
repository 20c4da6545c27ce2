//! Helpers shared by the mock's integration tests (reqwest here is built
//! without its `json` feature).

use std::error::Error;

use serde_json::Value;

/// Error type of the tests.
pub type BoxErr = Box<dyn Error>;

/// A plain-HTTP client (rustls needs a provider before any client is built).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build()
}

/// JSON request bodies.
pub trait JsonBody {
    /// Sets `v` as the JSON body.
    fn json_body(self, v: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
}

/// Reads a response body as JSON.
pub async fn json_of(resp: reqwest::Response) -> Result<Value, BoxErr> {
    Ok(serde_json::from_slice(&resp.bytes().await?)?)
}
