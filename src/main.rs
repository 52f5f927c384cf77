//! The `picaops` command line: parses arguments and hands over to the library.
//!
//! Each subcommand lives in its own file under src/cli/. Nothing here talks to a host.

mod cli;

use clap::Parser;

fn main() {
    // A closed pipe (`picaops … | head`) ends picaops quietly, like any Unix tool, instead of
    // panicking on the next print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    let code = cli::dispatch(args);
    std::process::exit(code);
}
