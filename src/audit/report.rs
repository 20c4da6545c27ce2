//! `turnout report` (PRODUCT.md §3.11): requests, errors, tokens and cost
//! per group, read from audit files (rotated ones included), and what the
//! same tokens would have cost on each upstream the config prices — the
//! reconciliation and savings figures otherwise computed by hand. Shadow
//! copies are reported apart, never in the totals.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// How lines are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The serving upstream.
    Upstream,
    /// The client key's name.
    Key,
    /// The client's model name.
    Model,
    /// The route.
    Route,
    /// The UTC day of `ts`.
    Day,
}

impl GroupBy {
    /// `upstream`, `key`, `model`, `route`, `day`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "upstream" => Self::Upstream,
            "key" => Self::Key,
            "model" => Self::Model,
            "route" => Self::Route,
            "day" => Self::Day,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Key => "key",
            Self::Model => "model",
            Self::Route => "route",
            Self::Day => "day",
        }
    }
}

/// What one audit line says that a report reads.
#[derive(Debug, Deserialize)]
struct Line {
    ts: String,
    key: Option<String>,
    route: Option<String>,
    model: Option<String>,
    upstream: Option<String>,
    status: u16,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    cost_usd: Option<f64>,
    #[serde(default)]
    shadow: bool,
}

/// Totals of one group.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    /// Group name (`-` when the field was empty).
    pub name: String,
    /// Requests.
    pub requests: u64,
    /// Requests answered with a status of 400 or more.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// USD at the serving upstreams' prices.
    pub cost_usd: f64,
}

impl Totals {
    fn add(&mut self, l: &Line) {
        self.requests += 1;
        self.errors += u64::from(l.status >= 400);
        self.prompt_tokens += l.prompt_tokens.unwrap_or(0);
        self.completion_tokens += l.completion_tokens.unwrap_or(0);
        self.cost_usd += l.cost_usd.unwrap_or(0.0);
    }
}

/// The same tokens at one upstream's prices.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WhatIf {
    /// A priced upstream of the config.
    pub upstream: String,
    /// What the tokens of the report would have cost there.
    pub cost_usd: f64,
    /// That minus what they did cost: positive means this upstream is dearer.
    pub difference_usd: f64,
    /// Lines whose model this upstream does not price (not in `cost_usd`).
    pub unpriced_requests: u64,
}

/// A whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The grouping.
    pub by: &'static str,
    /// Files read, oldest first.
    pub files: Vec<String>,
    /// One entry per group, by name.
    pub groups: Vec<Totals>,
    /// Every client request (no shadow copy).
    pub total: Totals,
    /// Shadow copies (PRODUCT.md §3.9), apart.
    pub shadow: Totals,
    /// Per priced upstream of the config.
    pub what_if: Vec<WhatIf>,
    /// Lines that were not audit lines (skipped).
    pub skipped_lines: u64,
}

/// Reads `files` (each with its rotated siblings), keeping lines newer than
/// `since` ago; prices the what-if on `cfg` when given.
pub fn build(
    files: &[PathBuf],
    since: Option<Duration>,
    by: GroupBy,
    cfg: Option<&Config>,
) -> std::io::Result<Report> {
    let cutoff = since.and_then(|d| SystemTime::now().checked_sub(d));
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    let mut total = Totals {
        name: "total".into(),
        ..Totals::default()
    };
    let mut shadow = Totals {
        name: "shadow".into(),
        ..Totals::default()
    };
    let priced: Vec<_> = cfg
        .map(|c| {
            c.upstreams
                .iter()
                .filter(|u| !u.pricing.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut what_if: Vec<WhatIf> = priced
        .iter()
        .map(|u| WhatIf {
            upstream: u.name.clone(),
            cost_usd: 0.0,
            difference_usd: 0.0,
            unpriced_requests: 0,
        })
        .collect();
    let mut skipped = 0;
    let mut read = Vec::new();
    for f in files {
        let all = super::rotated_paths(f);
        if all.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such audit file", f.display()),
            ));
        }
        for path in all {
            let file = std::fs::File::open(&path)?;
            read.push(path.display().to_string());
            for text in std::io::BufReader::new(file).lines() {
                let text = text?;
                if text.trim().is_empty() {
                    continue;
                }
                let Ok(l) = serde_json::from_str::<Line>(&text) else {
                    skipped += 1;
                    continue;
                };
                let ts = humantime::parse_rfc3339_weak(&l.ts).ok();
                if let (Some(cut), Some(ts)) = (cutoff, ts) {
                    if ts < cut {
                        continue;
                    }
                }
                if l.shadow {
                    shadow.add(&l);
                    continue;
                }
                total.add(&l);
                let name = match by {
                    GroupBy::Upstream => l.upstream.clone(),
                    GroupBy::Key => l.key.clone(),
                    GroupBy::Model => l.model.clone(),
                    GroupBy::Route => l.route.clone(),
                    GroupBy::Day => l.ts.get(..10).map(str::to_owned),
                }
                .unwrap_or_else(|| "-".into());
                groups
                    .entry(name.clone())
                    .or_insert_with(|| Totals {
                        name,
                        ..Totals::default()
                    })
                    .add(&l);
                if l.prompt_tokens.is_none() && l.completion_tokens.is_none() {
                    continue;
                }
                let model = l.model.as_deref().unwrap_or("");
                for (u, w) in priced.iter().zip(what_if.iter_mut()) {
                    let sent = u.model_map.get(model).map_or(model, String::as_str);
                    match u.pricing.get(sent).or_else(|| u.pricing.get("*")) {
                        Some(p) => {
                            w.cost_usd += (l.prompt_tokens.unwrap_or(0) as f64 * p.input
                                + l.completion_tokens.unwrap_or(0) as f64 * p.output)
                                / 1_000_000.0;
                        }
                        None => w.unpriced_requests += 1,
                    }
                }
            }
        }
    }
    for w in &mut what_if {
        w.difference_usd = w.cost_usd - total.cost_usd;
    }
    Ok(Report {
        by: by.as_str(),
        files: read,
        groups: groups.into_values().collect(),
        total,
        shadow,
        what_if,
        skipped_lines: skipped,
    })
}

impl Report {
    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let width = self
            .groups
            .iter()
            .map(|g| g.name.len())
            .chain([self.by.len(), 6])
            .max()
            .unwrap_or(6);
        let _ = writeln!(
            out,
            "{:<width$}  {:>10}  {:>8}  {:>14}  {:>14}  {:>12}",
            self.by.to_uppercase(),
            "REQUESTS",
            "ERRORS",
            "PROMPT_TOK",
            "COMPLETION_TOK",
            "COST_USD"
        );
        for g in self.groups.iter().chain([&self.total]) {
            let _ = writeln!(
                out,
                "{:<width$}  {:>10}  {:>8}  {:>14}  {:>14}  {:>12.6}",
                g.name, g.requests, g.errors, g.prompt_tokens, g.completion_tokens, g.cost_usd
            );
        }
        if self.shadow.requests > 0 {
            let s = &self.shadow;
            let _ = writeln!(
                out,
                "\nshadow copies (not in the totals): {} requests, {} errors, {} prompt + {} completion tokens, {:.6} USD",
                s.requests, s.errors, s.prompt_tokens, s.completion_tokens, s.cost_usd
            );
        }
        if !self.what_if.is_empty() {
            let _ = writeln!(out, "\nthe same tokens on each priced upstream:");
            let _ = writeln!(
                out,
                "{:<width$}  {:>12}  {:>14}  {:>9}",
                "UPSTREAM", "COST_USD", "VS_ACTUAL_USD", "UNPRICED"
            );
            for w in &self.what_if {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>12.6}  {:>+14.6}  {:>9}",
                    w.upstream, w.cost_usd, w.difference_usd, w.unpriced_requests
                );
            }
        }
        if self.skipped_lines > 0 {
            let _ = writeln!(out, "\n{} unreadable lines skipped", self.skipped_lines);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_totals_rotated_files_since_and_what_if() {
        let dir = std::env::temp_dir().join(format!("turnout-report-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        let now = humantime::format_rfc3339(SystemTime::now()).to_string();
        let line = |ts: &str, up: &str, status: u16, p: u64, c: u64, cost: f64, shadow: bool| {
            format!(
                r#"{{"ts":"{ts}","key":"k","route":"chat","model":"m","upstream":"{up}","status":{status},"prompt_tokens":{p},"completion_tokens":{c},"cost_usd":{cost},"shadow":{shadow}}}"#
            )
        };
        std::fs::write(
            dir.join("a.jsonl.1"),
            line("2020-01-01T00:00:00Z", "a", 200, 10, 20, 0.5, false) + "\n",
        )
        .unwrap();
        std::fs::write(
            &path,
            [
                line(&now, "a", 200, 1, 2, 0.1, false),
                line(&now, "b", 502, 0, 0, 0.0, false),
                line(&now, "b", 200, 100, 100, 9.0, true),
                "garbage".into(),
            ]
            .join("\n"),
        )
        .unwrap();
        let cfg = Config::from_yaml("listen: 127.0.0.1:0\nauth: {disabled: true}\nupstreams: [{name: a, base_url: 'http://127.0.0.1:1/v1', pricing: {'*': {input: 1000000, output: 0}}}, {name: b, base_url: 'http://127.0.0.1:2/v1'}]\nroutes: [{name: r, models: ['*'], primary: a}]\n").unwrap();
        let r = build(
            std::slice::from_ref(&path),
            None,
            GroupBy::Upstream,
            Some(&cfg),
        )
        .unwrap();
        assert_eq!(r.files.len(), 2);
        assert_eq!(r.total.requests, 3);
        assert_eq!(r.total.errors, 1);
        assert_eq!((r.total.prompt_tokens, r.total.completion_tokens), (11, 22));
        assert_eq!(r.shadow.requests, 1, "shadows apart");
        assert_eq!(r.skipped_lines, 1);
        assert_eq!(
            r.groups.iter().map(|g| &*g.name).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(r.what_if.len(), 1, "only priced upstreams");
        assert!((r.what_if[0].cost_usd - 11.0).abs() < 1e-9);
        let recent = build(&[path], Some(Duration::from_secs(3600)), GroupBy::Day, None).unwrap();
        assert_eq!(recent.total.requests, 2, "--since drops the old line");
        assert!(recent.table().contains("TOTAL") || recent.table().contains("total"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
