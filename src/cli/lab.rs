//! `picaops lab …`: bring the lab up and down, show it, open a shell on a lab host.

use clap::Subcommand;
use picaops::output::Output;

use super::Global;

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Build the images if needed, then start the lab.
    Up,
    /// Stop and remove the lab's containers and networks (images stay cached).
    Down,
    /// What runs, where, and the lab inventory's path.
    Status,
}

pub fn run(_cmd: LabCommand, _global: &Global, _out: &Output) -> i32 {
    eprintln!("picaops lab: not built yet");
    2
}
