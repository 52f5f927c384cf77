//! The inventory: sites, hosts, VMs, groups, variables — loaded from YAML, checked, resolved.
