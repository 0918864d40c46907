//! The Grafana dashboard and the Prometheus alert rules speak of metrics that exist: every
//! metric either names is in what the running services export (RabbitMQ's own, `rabbitmq_…`,
//! aside). The rules' logic is tested by `promtool test rules` in `make test`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::System;
use std::collections::BTreeSet;

/// Metric names in a PromQL expression: identifiers that are not functions, keywords, label
/// names (inside `{…}` or a `by (…)`), durations or strings.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Keywords, and the aggregation operators (written `sum by (…) (…)` as well as `sum(…)`).
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "unless",
        "and",
        "or",
        "offset",
        "bool",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut braces, mut brackets) = (0, 0, 0);
    let mut grouping = false; // inside the parentheses after `by` / `without`
    let mut last_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += 1;
                }
            }
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            '(' if last_word == "by" || last_word == "without" => grouping = true,
            ')' if grouping => grouping = false,
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric()
                        || chars[i + 1] == '_'
                        || chars[i + 1] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                let is_function = next == Some(&'(');
                if braces == 0
                    && brackets == 0
                    && !grouping
                    && !is_function
                    && !KEYWORDS.contains(&word.as_str())
                {
                    names.insert(word.clone());
                }
                last_word = word;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

#[test]
fn metric_names_are_told_from_functions_labels_and_keywords() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, job) (rate(x_bucket{route="/a b"}[5m]))) unless y"#
        ),
        BTreeSet::from(["x_bucket".to_owned(), "y".to_owned()])
    );
}

#[tokio::test]
async fn the_dashboard_and_the_alert_rules_use_only_metrics_the_services_export() {
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(
        "../../../deploy/grafana/dashboards/gozon.json"
    ))
    .unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    let alerts = include_str!("../../../deploy/prometheus/alerts.yml");
    let mut in_expr = false;
    for line in alerts.lines() {
        let trimmed = line.trim();
        if let Some(expr) = trimmed.strip_prefix("expr:") {
            in_expr = expr.trim() == "|";
            used.extend(metric_names(expr));
        } else if in_expr && line.starts_with("          ") {
            used.extend(metric_names(trimmed));
        } else {
            in_expr = false;
        }
    }
    let ours: BTreeSet<_> = used
        .into_iter()
        .filter(|m| !m.starts_with("rabbitmq_"))
        .collect();
    assert!(ours.len() >= 10, "too few metrics found to judge: {ours:?}");

    let system = System::start().await;
    system.open_account("watched", 100).await;
    let order = system.place_order("watched", 10).await;
    system.settled(order["id"].as_str().unwrap()).await;
    let mut exported = BTreeSet::new();
    for service in [
        &system.orders_url,
        &system.payments_url,
        &system.identity_url,
    ] {
        let text = system
            .http
            .get(format!("{service}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            exported.insert(name.to_owned());
        }
    }
    let missing: Vec<_> = ours.difference(&exported).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}");
    system.stop().await;
}
