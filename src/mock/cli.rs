//! `turnout mock`: a standalone simulated provider for demos and benchmarks.

use std::net::SocketAddr;
use std::time::Duration;

use super::{MockServer, MockSettings};

/// Options of `turnout mock`; each maps to a [`MockSettings`] field so a
/// benchmark can model a provider's timing and flakiness from the shell.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Delay before response headers, e.g. `200ms`.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Streaming: delay before the first chunk.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub ttft: Duration,
    /// Streamed content chunks (also the completion token count).
    #[arg(long, default_value_t = 8)]
    pub chunks: u32,
    /// Streaming: delay between chunks.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub chunk_delay: Duration,
    /// Fraction (0..=1) of inference requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Model ids listed by `GET /v1/models`, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Instance name, echoed in responses.
    #[arg(long, default_value = "mock")]
    pub name: String,
}

impl MockArgs {
    /// The settings these options describe (default model list if none given).
    pub fn settings(&self) -> MockSettings {
        let mut settings = MockSettings {
            latency: self.latency,
            ttft: self.ttft,
            chunks: self.chunks,
            chunk_delay: self.chunk_delay,
            fail_rate: self.fail_rate,
            name: self.name.clone(),
            ..MockSettings::default()
        };
        if !self.models.is_empty() {
            settings.models = self.models.clone();
        }
        settings
    }
}

/// Serves until Ctrl-C.
pub async fn run(args: MockArgs) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let server = MockServer::spawn(listener, args.settings()).await?;
    eprintln!("turnout mock listening on {}", server.base_url());
    tokio::signal::ctrl_c().await?;
    server.kill();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockArgs,
    }

    #[test]
    fn parses_durations_and_models() {
        let args = [
            "x",
            "--latency",
            "200ms",
            "--models",
            "a,b",
            "--chunks",
            "3",
        ];
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string());
        let s = cli.map(|c| c.mock.settings());
        let s = s.as_ref().map_err(String::as_str);
        assert_eq!(s.map(|s| s.latency), Ok(Duration::from_millis(200)));
        assert_eq!(
            s.map(|s| s.models.clone()),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(s.map(|s| s.chunks), Ok(3));
    }

    #[test]
    fn defaults_keep_default_models() {
        let s = Cli::try_parse_from(["x"]).map(|c| c.mock.settings());
        assert_eq!(s.map(|s| s.models.len()).ok(), Some(4));
    }
}
