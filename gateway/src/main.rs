use clap::Parser;

mod alloc;

/// The gateway allocates many small, short-lived buffers per request (JSON, HTTP, TLS records)
/// across worker threads, where mimalloc measurably beats the system allocator.
#[global_allocator]
static GLOBAL: alloc::MiMalloc = alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = weft::cli::Cli::parse();
    weft::cli::init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(weft::cli::run(cli))
}
