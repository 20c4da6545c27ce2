use std::time::Duration;

use super::*;

const MIN: &str = "listen: 127.0.0.1:0\nauth: {disabled: true}\nupstreams: [{name: a, base_url: 'http://127.0.0.1:1/v1'}, {name: b, base_url: 'http://127.0.0.1:2/v1'}]\nroutes: [{name: chat, models: ['*'], primary: a, fallbacks: [b], split: {target: b, percentage: 10}}]\n";

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::from_yaml(MIN).unwrap();
    assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
    assert_eq!(c.upstreams[0].health.path, "/models");
    assert_eq!(c.upstreams[0].health.interval, Duration::from_secs(5));
    assert_eq!(c.admin.token_env, "TURNOUT_ADMIN_TOKEN");
}

#[test]
fn misspelled_key_is_named_with_its_line() {
    let bad = MIN.replace("primary: a", "primry: a");
    let e = Config::from_yaml(&bad).unwrap_err().to_string();
    assert!(e.contains("primry"), "{e}");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn cross_field_rules() {
    let cases = [
        (
            MIN.replace("primary: a,", "primary: zz,"),
            "routes[0].primary",
        ),
        (
            MIN.replace("percentage: 10", "percentage: 150"),
            "split.percentage",
        ),
        (MIN.replace("auth: {disabled: true}\n", ""), "auth"),
        (MIN.replace("127.0.0.1:0", "0.0.0.0:8080"), "listen"),
        (
            MIN.replace(
                "base_url: 'http://127.0.0.1:1/v1'",
                "base_url: 'http://127.0.0.1:1/v1', health: {interval: 1s, timeout: 2s}",
            ),
            "health.timeout",
        ),
        (MIN.replace("name: b,", "name: a,"), "upstreams[1].name"),
        (
            MIN.replace("'http://127.0.0.1:2/v1'", "'ftp://x'"),
            "upstreams[1].base_url",
        ),
    ];
    for (text, key) in cases {
        let e = Config::from_yaml(&text).unwrap_err().to_string();
        assert!(e.contains(key), "expected {key} in {e}");
    }
}

#[test]
fn durations_parse() {
    let c = Config::from_yaml(&MIN.replace(
        "'http://127.0.0.1:1/v1'",
        "'http://127.0.0.1:1/v1', timeouts: {connect: 250ms, idle: 2m, first_token: 5}",
    ))
    .unwrap();
    assert_eq!(c.upstreams[0].timeouts.connect, Duration::from_millis(250));
    assert_eq!(c.upstreams[0].timeouts.idle, Duration::from_secs(120));
    assert_eq!(c.upstreams[0].timeouts.first_token, Duration::from_secs(5));
    let e = Config::from_yaml(&MIN.replace(
        "'http://127.0.0.1:1/v1'",
        "'http://127.0.0.1:1/v1', timeouts: {connect: soon}",
    ))
    .unwrap_err();
    assert!(e.to_string().contains("invalid duration"), "{e}");
}

#[test]
fn secrets_name_the_variable_never_the_value() {
    let text = MIN.replace(
        "base_url: 'http://127.0.0.1:1/v1'",
        "base_url: 'http://127.0.0.1:1/v1', api_key_env: UP_A_KEY",
    );
    let c = Config::from_yaml(&text).unwrap();
    let e = Secrets::resolve(&c, &|_| None).unwrap_err().to_string();
    assert!(e.contains("UP_A_KEY"), "{e}");
    let s = Secrets::resolve(&c, &|v| (v == "UP_A_KEY").then(|| "sk-secret".to_string())).unwrap();
    assert!(!format!("{s:?}").contains("sk-secret"));
    assert!(s.admin_token.is_none());
}

#[test]
fn a_bad_duration_names_its_key() {
    let e = Config::from_yaml(&MIN.replace(
        "'http://127.0.0.1:1/v1'",
        "'http://127.0.0.1:1/v1', health: {interval: 5x}",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("upstreams[0].health.interval"), "{e}");
    assert!(e.contains("invalid duration") && e.contains("line"), "{e}");
}

#[test]
fn fleet_sections_get_defaults() {
    let c = Config::from_yaml(&format!("redis: {{}}\nreload: {{watch: true}}\n{MIN}")).unwrap();
    let r = c.redis.as_ref().unwrap();
    assert_eq!(
        (r.url_env.as_str(), r.key_prefix.as_str()),
        ("TURNOUT_REDIS_URL", "turnout:")
    );
    assert!(c.reload.watch);
    assert_eq!(c.reload.interval, Duration::from_secs(2));
    assert_eq!(c.shutdown.grace, Duration::from_secs(5));
    assert_eq!(c.shutdown.drain, Duration::from_secs(30));
    assert!(c
        .env_vars()
        .iter()
        .any(|(k, v)| k == "redis.url_env" && v == "TURNOUT_REDIS_URL"));
    let e = Secrets::resolve(&c, &|_| None).unwrap_err().to_string();
    assert!(
        e.contains("redis.url_env") && e.contains("TURNOUT_REDIS_URL"),
        "{e}"
    );
}

#[test]
fn otel_is_off_by_default_and_resolved_from_its_env_var() {
    let c = Config::from_yaml(MIN).unwrap();
    assert!(c.otel.is_none());
    let on = format!("{MIN}otel: {{}}\n");
    let c = Config::from_yaml(&on).unwrap();
    let o = c.otel.as_ref().unwrap();
    assert_eq!(o.endpoint_env, "OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_eq!((o.sample_ratio, o.service_name.as_str()), (1.0, "turnout"));
    let env = |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4318".to_owned());
    let s = Secrets::resolve(&c, &env).unwrap();
    assert_eq!(
        s.otel_endpoint.map(|e| e.0).as_deref(),
        Some("http://c:4318")
    );
    assert!(c.env_vars().iter().any(|(k, _)| k == "otel.endpoint_env"));
    let bad = format!("{MIN}otel: {{sample_ratio: 1.5}}\n");
    let e = Config::from_yaml(&bad).unwrap_err().to_string();
    assert!(e.contains("otel.sample_ratio"), "{e}");
    let typo = format!("{MIN}otel: {{endpoint: x}}\n");
    assert!(Config::from_yaml(&typo).is_err());
}
