//! The `blueprint-proxy` binary; see the library's docs and `blueprint-proxy --help`.

fn main() -> std::process::ExitCode {
    blueprint_proxy::cli::main()
}
