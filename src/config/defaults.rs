//! Default values of optional config keys, one function each (serde needs functions).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub fn listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
}
pub fn admin_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9090))
}
pub fn admin_token_env() -> String {
    "TURNOUT_ADMIN_TOKEN".into()
}
pub fn state_path() -> PathBuf {
    "turnout-state.json".into()
}
pub fn max_body_bytes() -> usize {
    32 * 1024 * 1024
}
pub fn yes() -> bool {
    true
}
pub fn health_path() -> String {
    "/models".into()
}
pub fn health_interval() -> Duration {
    Duration::from_secs(5)
}
pub fn health_timeout() -> Duration {
    Duration::from_secs(2)
}
pub fn unhealthy_threshold() -> u32 {
    3
}
pub fn healthy_threshold() -> u32 {
    2
}
pub fn connect() -> Duration {
    Duration::from_secs(5)
}
pub fn headers() -> Duration {
    Duration::from_secs(300)
}
pub fn first_token() -> Duration {
    Duration::from_secs(30)
}
pub fn idle() -> Duration {
    Duration::from_secs(60)
}
pub fn total() -> Duration {
    Duration::from_secs(600)
}
pub fn rollback_window() -> Duration {
    Duration::from_secs(60)
}
pub fn rollback_min_requests() -> u32 {
    20
}
pub fn rollback_error_rate() -> f64 {
    0.2
}
pub fn max_attempts() -> u32 {
    3
}
pub fn budget_ratio() -> f64 {
    0.1
}
pub fn budget_min_per_second() -> u32 {
    2
}
pub fn backoff_base() -> Duration {
    Duration::from_millis(50)
}
pub fn backoff_max() -> Duration {
    Duration::from_secs(2)
}
pub fn retry_after_max() -> Duration {
    Duration::from_secs(60)
}
pub fn same_upstream_retries() -> u32 {
    1
}
pub fn consecutive_failures() -> u32 {
    5
}
pub fn base_ejection() -> Duration {
    Duration::from_secs(30)
}
pub fn max_ejection() -> Duration {
    Duration::from_secs(300)
}
pub fn outlier_error_rate() -> f64 {
    0.5
}
pub fn outlier_window() -> Duration {
    Duration::from_secs(30)
}
pub fn outlier_min_requests() -> u32 {
    20
}
pub fn alert_timeout() -> Duration {
    Duration::from_secs(5)
}
pub fn alert_queue() -> usize {
    256
}
pub fn log_level() -> String {
    "info".into()
}
pub fn ws_max_message() -> usize {
    1024 * 1024
}
pub fn ws_max_in_flight() -> usize {
    8
}
pub fn ws_max_turns() -> usize {
    50
}
pub fn ws_max_conversation_bytes() -> usize {
    256 * 1024
}
pub fn ws_ping() -> Duration {
    Duration::from_secs(25)
}
pub fn slow_start() -> Duration {
    Duration::from_secs(30)
}
pub fn hedge_max() -> u32 {
    1
}
pub fn redis_url_env() -> String {
    "TURNOUT_REDIS_URL".into()
}
pub fn redis_key_prefix() -> String {
    "turnout:".into()
}
pub fn redis_sync_interval() -> Duration {
    Duration::from_millis(100)
}
pub fn redis_timeout() -> Duration {
    Duration::from_secs(1)
}
pub fn reload_interval() -> Duration {
    Duration::from_secs(2)
}
pub fn shutdown_grace() -> Duration {
    Duration::from_secs(5)
}
pub fn shutdown_drain() -> Duration {
    Duration::from_secs(30)
}
pub fn otel_endpoint_env() -> String {
    "OTEL_EXPORTER_OTLP_ENDPOINT".into()
}
pub fn otel_sample_ratio() -> f64 {
    1.0
}
pub fn otel_service_name() -> String {
    "turnout".into()
}
pub fn audit_path() -> PathBuf {
    "turnout-audit.jsonl".into()
}
pub fn audit_max_bytes() -> u64 {
    100_000_000
}
pub fn audit_keep() -> usize {
    5
}
pub fn audit_queue() -> usize {
    10_000
}
pub fn gates_window() -> Duration {
    Duration::from_secs(300)
}
pub fn gates_min_requests() -> u32 {
    100
}
pub fn gates_error_increase() -> f64 {
    0.02
}
pub fn gates_latency_ratio() -> f64 {
    1.5
}
pub fn ramp_bake() -> Duration {
    Duration::from_secs(1800)
}
pub fn shadow_max_rps() -> u32 {
    5
}
