//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds the PostgreSQL
//! migrations at compile time, and cargo does not watch their folder by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
