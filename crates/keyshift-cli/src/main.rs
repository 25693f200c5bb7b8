//! The `keyshift` binary: a thin shell over [`keyshift_cli`].

fn main() -> std::process::ExitCode {
    keyshift_cli::main()
}
