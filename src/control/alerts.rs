//! Alert webhook: Slack-compatible `text` plus structured fields, sent from a
//! bounded queue by one background task. A slow or failing webhook never
//! delays traffic: when the queue is full the alert is dropped and counted.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AlertsConfig;
use crate::metrics::Metrics;

/// One alert.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Slack-compatible one-liner.
    pub text: String,
    /// `health_changed`, `ejected`, `recovered`, `rollback`.
    pub event: &'static str,
    /// Upstream concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Route concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// New state or trigger.
    pub detail: String,
    /// RFC 3339 time.
    pub at: String,
}

impl Alert {
    /// Builds an alert stamped now.
    pub fn new(
        event: &'static str,
        text: String,
        upstream: Option<&str>,
        route: Option<&str>,
        detail: &str,
    ) -> Self {
        Self {
            text,
            event,
            upstream: upstream.map(str::to_owned),
            route: route.map(str::to_owned),
            detail: detail.to_owned(),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }
    }
}

/// Cheap handle to the alert queue.
#[derive(Clone)]
pub struct Alerts {
    tx: Option<mpsc::Sender<Alert>>,
    metrics: Metrics,
}

impl Alerts {
    /// Starts the sender task when a webhook is configured.
    pub fn start(cfg: &AlertsConfig, metrics: Metrics) -> Self {
        let Some(url) = cfg.webhook_url.clone() else {
            return Self { tx: None, metrics };
        };
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        tokio::spawn(run(url, cfg.timeout, rx, metrics.clone()));
        Self {
            tx: Some(tx),
            metrics,
        }
    }

    /// Logs the alert and queues it for the webhook without waiting.
    pub fn send(&self, alert: Alert) {
        tracing::warn!(event = alert.event, detail = %alert.detail, "alert: {}", alert.text);
        if let Some(tx) = &self.tx {
            if tx.try_send(alert).is_err() {
                self.metrics.alerts.with_label_values(&["dropped"]).inc();
            }
        }
    }
}

async fn run(url: String, timeout: Duration, mut rx: mpsc::Receiver<Alert>, metrics: Metrics) {
    crate::upstream::install_crypto();
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("alert webhook client: {e}");
            return;
        }
    };
    while let Some(alert) = rx.recv().await {
        let body = serde_json::to_vec(&alert).unwrap_or_default();
        let ok = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        let result = if ok { "sent" } else { "failed" };
        metrics.alerts.with_label_values(&[result]).inc();
        if !ok {
            tracing::warn!(event = alert.event, "alert webhook delivery failed");
        }
    }
}
