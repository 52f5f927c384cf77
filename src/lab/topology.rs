//! The lab's fixed shape: two sites (one Docker network each), the WAN router between them,
//! and the four lab hosts with their addresses. Data only: nothing here talks to Docker.

/// One lab site: a Docker bridge network standing for a server room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteSpec {
    /// Site name, as in Picasoft's inventory (`toulouse`, `compiegne`).
    pub name: &'static str,
    pub description: &'static str,
    /// The site this one sends its backups to.
    pub backs_up_to: &'static str,
    /// Docker network standing for the site's LAN.
    pub network: &'static str,
    pub subnet: &'static str,
    /// The bridge's address on the workstation: how the workstation reaches the site directly.
    pub gateway: &'static str,
    /// The WAN router's address on this site: where hosts send traffic for the other site.
    pub router: &'static str,
}

/// What a lab host is for; decides its image, its inventory groups and its hypervisor kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A physical hypervisor: Docker, libvirt/QEMU, restic.
    Hypervisor,
    /// The LDAP server.
    Directory,
}

/// One lab host: a container running systemd, named after the real machine it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSpec {
    pub name: &'static str,
    pub site: &'static str,
    pub address: &'static str,
    pub role: Role,
    pub description: &'static str,
}

pub const SITES: [SiteSpec; 2] = [
    SiteSpec {
        name: "toulouse",
        description: "lab copy of Tetaneutral's room in Toulouse",
        backs_up_to: "compiegne",
        network: "picaops-toulouse",
        subnet: "172.30.1.0/24",
        gateway: "172.30.1.1",
        router: "172.30.1.254",
    },
    SiteSpec {
        name: "compiegne",
        description: "lab copy of the UTC server room in Compiègne",
        backs_up_to: "toulouse",
        network: "picaops-compiegne",
        subnet: "172.30.2.0/24",
        gateway: "172.30.2.1",
        router: "172.30.2.254",
    },
];

pub const HOSTS: [HostSpec; 4] = [
    HostSpec {
        name: "bob",
        site: "toulouse",
        address: "172.30.1.11",
        role: Role::Hypervisor,
        description: "lab hypervisor (container)",
    },
    HostSpec {
        name: "alice",
        site: "compiegne",
        address: "172.30.2.11",
        role: Role::Hypervisor,
        description: "lab hypervisor (container)",
    },
    HostSpec {
        name: "caribou",
        site: "compiegne",
        address: "172.30.2.12",
        role: Role::Hypervisor,
        description: "lab hypervisor (container)",
    },
    HostSpec {
        name: "ldap",
        site: "compiegne",
        address: "172.30.2.20",
        role: Role::Directory,
        description: "lab LDAP server (container, slapd)",
    },
];

/// Name of the WAN router container, attached to both site networks.
pub const ROUTER_CONTAINER: &str = "picaops-lab-wan";

/// Label put on every container, network and volume the lab creates, so `lab down` finds them.
pub const LABEL: &str = "picaops.lab";

/// The Docker container standing for a lab host.
pub fn container_name(host: &str) -> String {
    format!("picaops-lab-{host}")
}

/// The volume holding a hypervisor's inner /var/lib/docker (overlay on overlay fails).
pub fn docker_volume_name(host: &str) -> String {
    format!("picaops-lab-{host}-docker")
}

pub fn site(name: &str) -> Option<&'static SiteSpec> {
    SITES.iter().find(|s| s.name == name)
}

pub fn host(name: &str) -> Option<&'static HostSpec> {
    HOSTS.iter().find(|h| h.name == name)
}

/// The other site's subnet and this site's router: the one route every host gets, so that
/// cross-site traffic really crosses the WAN router.
pub fn cross_site_route(site_name: &str) -> Option<String> {
    let here = site(site_name)?;
    let there = SITES.iter().find(|s| s.name != site_name)?;
    Some(format!("{} via {}", there.subnet, here.router))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_lives_in_its_sites_subnet() {
        for h in HOSTS {
            let s = site(h.site).expect("host on a known site");
            let prefix = s.subnet.trim_end_matches("0/24");
            assert!(
                h.address.starts_with(prefix),
                "{} not in {}",
                h.name,
                s.subnet
            );
        }
    }

    #[test]
    fn cross_site_route_points_at_the_local_router() {
        assert_eq!(
            cross_site_route("toulouse").unwrap(),
            "172.30.2.0/24 via 172.30.1.254"
        );
        assert_eq!(
            cross_site_route("compiegne").unwrap(),
            "172.30.1.0/24 via 172.30.2.254"
        );
    }
}
