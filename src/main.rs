//! The `tempvault` command: parses the command line and hands over to the library.

use clap::Parser as _;

/// Every allocation of the process, RocksDB's included, goes to jemalloc (see Cargo.toml).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tempvault::cli::run(tempvault::cli::Cli::parse())
}
