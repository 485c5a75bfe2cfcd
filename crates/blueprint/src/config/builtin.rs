//! The built-in catalog: YAML blueprint files embedded in the binary.

/// Each file's path in the repository, and its text.
pub(crate) const FILES: &[(&str, &str)] = &[
    (
        "crates/blueprint/blueprints/github.yaml",
        include_str!("../../blueprints/github.yaml"),
    ),
    (
        "crates/blueprint/blueprints/hubspot.yaml",
        include_str!("../../blueprints/hubspot.yaml"),
    ),
    (
        "crates/blueprint/blueprints/intercom.yaml",
        include_str!("../../blueprints/intercom.yaml"),
    ),
    (
        "crates/blueprint/blueprints/slack.yaml",
        include_str!("../../blueprints/slack.yaml"),
    ),
    (
        "crates/blueprint/blueprints/zendesk.yaml",
        include_str!("../../blueprints/zendesk.yaml"),
    ),
];
