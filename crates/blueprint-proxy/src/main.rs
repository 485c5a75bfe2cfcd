//! The `blueprint-proxy` binary; see the library's docs and `blueprint-proxy --help`.

/// The allocator of the binary (feature `mimalloc`, on by default; see `Cargo.toml`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    blueprint_proxy::cli::main()
}
