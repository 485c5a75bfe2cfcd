//! The `blueprint-proxy` binary; see the library's docs and `blueprint-proxy --help`.

/// The binary allocates with mimalloc: glibc's malloc and free were about 15% of the
/// instructions of a proxied call under callgrind (`benches/proxy.sh` measures the result).
/// The library leaves the allocator to the program that embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    blueprint_proxy::cli::main()
}
