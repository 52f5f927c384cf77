//! `picaops run -- COMMAND…`: an ad-hoc command on every selected host.

use clap::Args;
use picaops::output::Output;

use super::Global;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Which hosts: names, groups or sites, comma-separated; globs (`pica*`) and `!name` to exclude.
    #[arg(short, long)]
    pub limit: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

pub fn run(_args: RunArgs, _global: &Global, _out: &Output) -> i32 {
    eprintln!("picaops run: not built yet");
    2
}
