//! The `keyshift` binary: a thin shell over [`keyshift_cli`].

/// mimalloc rather than glibc malloc: under load the server allocates on one thread and frees on
/// another (a request task, the audit writer, the store's commit thread), which glibc serialises
/// on its arena locks. See `docs/benchmarks.md`, "Cost of the audit log".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keyshift_cli::main()
}
