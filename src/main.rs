use clap::Parser;
use scimsync::cli::{self, Cli};
use std::process::ExitCode;

/// See Cargo.toml: resident memory stays bounded under long write-heavy load.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Configuration errors are printed before logging exists, plainly, on stderr.
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("scimsync: {e}");
            return ExitCode::from(1);
        }
    };
    scimsync::telemetry::init(config.log.format, &config.log.level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("scimsync: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli, config)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("scimsync: {e:#}");
            ExitCode::from(1)
        }
    }
}
