//! Turnout: an OpenAI-compatible failover router for LLM APIs.
pub mod config;
pub mod metrics;
pub mod mock;
