//! Variable precedence: which value a machine sees for each variable, and where it was set.
//!
//! Lowest first: inventory `vars:` < the machine's site `vars:` < its groups' `vars:` (in the
//! order of its `groups:` list, later wins) < its own `vars:`. Playbook, task and `-e` values
//! come on top of these in the converge engine.

use indexmap::IndexMap;
use serde::Serialize;

use super::model::{Inventory, Machine, Var};
use crate::diagnostic::Place;

/// A variable as one machine sees it.
#[derive(Clone, Debug, Serialize)]
pub struct ResolvedVar {
    pub value: serde_json::Value,
    /// `inventory`, `site toulouse`, `group docker_hosts`, `host bob`, `vm pica01`.
    pub scope: String,
    pub place: Place,
}

/// Every variable `machine` sees, with the scope and place that won.
pub fn resolve(inv: &Inventory, machine: Machine<'_>) -> IndexMap<String, ResolvedVar> {
    let mut out = IndexMap::new();
    let mut layer = |scope: String, vars: &IndexMap<String, Var>| {
        for (name, var) in vars {
            out.insert(
                name.clone(),
                ResolvedVar {
                    value: var.value.clone(),
                    scope: scope.clone(),
                    place: var.place.clone(),
                },
            );
        }
    };
    layer("inventory".into(), &inv.vars);
    if let Some(site) = inv.site_of(machine) {
        layer(format!("site {}", site.name), &site.vars);
    }
    for group in machine.groups() {
        if let Some(g) = inv.groups.get(group.as_str()) {
            layer(format!("group {}", g.name), &g.vars);
        }
    }
    layer(
        format!("{} {}", machine.kind(), machine.name()),
        machine.vars(),
    );
    out
}
