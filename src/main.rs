//! The `picaops` command line: parses arguments and hands over to the library.
//!
//! Each subcommand lives in its own file under src/cli/. Nothing here talks to a host.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = cli::dispatch(args);
    std::process::exit(code);
}
