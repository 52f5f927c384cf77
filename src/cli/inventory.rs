//! `picaops inventory check | show | graph`.

use clap::Subcommand;
use picaops::output::Output;

use super::Global;

#[derive(Subcommand, Debug)]
pub enum InventoryCommand {
    /// Read every file and report all errors with file:line:column.
    Check,
}

pub fn run(_cmd: InventoryCommand, _global: &Global, _out: &Output) -> i32 {
    2
}
