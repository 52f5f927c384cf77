//! Docker Compose services: each service of the inventory is a Compose project on its machine
//! (`/var/lib/picaops/services/NAME`), deployed only when its files changed or its containers are
//! not running, gated by health, rolled back on failure, its secrets never shown.
//!
//! - [`config`]: the inventory's `services:` entries, read and checked with places.
//! - [`render`]: the project files (template, env, secrets) and the rules checked before any
//!   machine is touched (exact image versions, ports, secrets resolvable).
//! - [`state`]: what a machine runs, read in one round trip without Compose.
//! - [`plan`]: the diff, per project and per container.
//! - [`deploy`]: plan/apply over the transport pool; restart and logs.
//! - [`report`]: human and JSON output; [`list`]: `picaops service list`.
//!
//! Must not: delete a data directory or a volume (removal is `down` without `-v`), put a secret
//! on a command line, in a plan, a log or an error message.

pub mod config;
pub mod deploy;
pub mod list;
pub mod ops;
pub mod phase;
pub mod plan;
pub mod render;
pub mod report;
pub mod state;

use std::collections::BTreeSet;

pub use config::{Deploy, Health};
pub use render::Project;

use crate::diagnostic::{Diagnostic, Sources};
use crate::inventory::Inventory;
use crate::playbook::template::Templates;

/// Renders and checks the projects of the given machines (all when `None`): what must pass
/// before any machine is contacted.
pub fn prepare(
    inv: &Inventory,
    machines: Option<&BTreeSet<String>>,
    sources: &mut Sources,
) -> Result<Vec<Project>, Vec<Diagnostic>> {
    render::render_all(inv, machines, &Templates::new(), sources).map_err(|mut diags| {
        diags.sort_by(|a, b| {
            (&a.place.file, a.place.line, a.place.column).cmp(&(
                &b.place.file,
                b.place.line,
                b.place.column,
            ))
        });
        diags
    })
}

/// Every secret value of these projects, longest first (for `redact`).
pub fn secret_values(projects: &[Project]) -> Vec<String> {
    let mut v: Vec<String> = projects
        .iter()
        .flat_map(Project::secret_values)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v
}
