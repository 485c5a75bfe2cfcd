//! Integration tests of blueprint-refresh: token endpoints and upstreams are wiremock
//! servers on loopback; SQLite stores are real files.

// Test helpers outside `#[test]` functions panic on purpose when a fixture is broken.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod flow;
mod layer;
mod processes;
mod redaction;
mod replicas;
mod source;
