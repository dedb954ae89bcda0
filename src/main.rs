//! The `tempvault` command: parses the command line and hands over to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    tempvault::cli::run(tempvault::cli::Cli::parse())
}
