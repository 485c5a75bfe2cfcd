//! The one table of metrics (`crates/blueprint-metrics/metrics.md`, shown in the crate docs,
//! the proxy's `Metrics` docs and the README) says exactly what `/metrics` exports: every
//! family with its type and labels, no more, no less.

mod proxy_support;

use std::collections::BTreeSet;

use http::Method;
use proxy_support::{FAST_RETRY, InProcess, raw_upstream, yaml};
use serde_json::json;

/// `(exported family, type, labels)`, as in the table or in `/metrics`.
type Family = (String, String, BTreeSet<String>);

fn table() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/blueprint-metrics/metrics.md"
    );
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The families the table documents. A counter's row names the sample (`…_total`), whose
/// family in the OpenMetrics text has no `_total`.
fn documented(table: &str) -> BTreeSet<Family> {
    let mut families = BTreeSet::new();
    for row in table.lines().skip(2) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert!(cells.len() >= 4, "a row of four cells: {row}");
        let name = cells[0].trim_matches('`');
        let kind = cells[1].to_owned();
        let family = match kind.as_str() {
            "counter" => name
                .strip_suffix("_total")
                .unwrap_or_else(|| panic!("a counter's name ends in _total: {row}")),
            _ => name,
        };
        let labels = if cells[2] == "none" {
            BTreeSet::new()
        } else {
            cells[2]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_owned())
                .collect()
        };
        families.insert((family.to_owned(), kind, labels));
    }
    families
}

/// The families `/metrics` exports, with the label names of their samples (`le` aside).
fn exported(text: &str) -> BTreeSet<Family> {
    let mut types = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("# TYPE <family> <type>: {line}"));
            types.push((family.to_owned(), kind.to_owned()));
        }
    }
    let mut families = BTreeSet::new();
    for (family, kind) in types {
        let mut labels = BTreeSet::new();
        let mut samples = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let ours = match kind.as_str() {
                "counter" => name == format!("{family}_total"),
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name == format!("{family}{suffix}")),
                _ => name == family,
            };
            if !ours {
                continue;
            }
            samples += 1;
            if let Some((_, rest)) = line.split_once('{') {
                let inside = rest
                    .split_once('}')
                    .unwrap_or_else(|| panic!("no closing brace: {line}"))
                    .0;
                for pair in inside.split(',') {
                    let key = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("not key=value: {line}"))
                        .0;
                    if key != "le" {
                        labels.insert(key.to_owned());
                    }
                }
            }
        }
        assert!(samples > 0, "family {family} has no sample in\n{text}");
        families.insert((family, kind, labels));
    }
    families
}

#[tokio::test]
async fn the_table_of_metrics_is_what_metrics_exports() {
    let table = table();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    assert!(
        readme.contains(&table),
        "the README's table of metrics differs from crates/blueprint-metrics/metrics.md: copy it"
    );

    let upstream = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    )
    .await;
    let proxy = InProcess::start(&yaml(&format!("http://{upstream}"), FAST_RETRY, "")).await;
    let reply = proxy
        .import("intercom", "acme", json!({ "access_token": "tok_TABLE" }))
        .await;
    assert!(reply.status < 300, "{}", reply.text());
    // One call, so that the series made on first use exist too.
    let reply = proxy
        .send(proxy.proxy(Method::GET, "/me", "intercom", "acme"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = proxy.metrics().await;
    proxy.stop().await;

    let documented = documented(&table);
    let exported = exported(&text);
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "exported but not in the table (or not as the table says): {undocumented:#?}\n\
         in the table but not exported so: {missing:#?}\n/metrics:\n{text}"
    );
}
