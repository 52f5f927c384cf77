//! The inventory: sites, hosts, VMs, groups, variables — loaded from YAML, checked, resolved.
//!
//! `load` reads a directory into a checked `Inventory` (or every problem, with places);
//! `select` turns a `--limit` pattern into machines (`failed` keeps what `@failed` selects);
//! `vars` merges variables by precedence; `graph` draws the topology. Nothing here contacts a host.

mod check;
pub mod failed;
pub mod graph;
mod load;
pub mod model;
mod reach;
pub mod recovery;
mod sections;
pub mod select;
pub mod show;
pub mod vars;

pub use crate::values::valid_name;
pub use crate::values::{self, shown};
pub use check::{check_host_key, HostKeyError};
pub use load::{load, parse_size, Loaded};
pub use model::*;
pub use reach::{
    fingerprint, is_pinned, known_hosts_text, line_names, pin, record_host_key, runtime_dir,
    target, write_known_hosts, KnownHostsError, NoAddress, PinError,
};
pub use sections::backup_data_host;
