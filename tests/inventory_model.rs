//! The checked model as commands see it: `--limit` selection, variable precedence, host keys.
//! Each test writes a small inventory in a temporary directory and loads it with the library.

use std::path::Path;

use picaops::inventory::{self, select, vars, Inventory};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn picasoft_like() -> (tempfile::TempDir, Inventory) {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "sites.yml",
        "sites:\n  toulouse:\n    backs_up_to: compiegne\n    vars: { ntp: tls.example, tier: site }\n  compiegne:\n    backs_up_to: toulouse\n",
    );
    write(
        dir.path(),
        "hosts.yml",
        &format!(
            "hosts:\n  bob:\n    site: toulouse\n    address: 10.0.0.1\n    host_key: {KEY}\n    groups: [hypervisors]\n    vars: {{ tier: host }}\n  \
             alice: {{ site: compiegne, address: 10.0.0.2, port: 2222, groups: [hypervisors] }}\n  \
             caribou: {{ site: compiegne, address: 10.0.0.3, groups: [hypervisors] }}\n"
        ),
    );
    write(
        dir.path(),
        "vms.yml",
        "vms:\n  pica01: { host: bob, address: 10.0.1.1, groups: [docker_hosts, test] }\n  pica02: { host: bob, address: 10.0.1.2, groups: [docker_hosts] }\n  media: { host: caribou, address: 10.0.1.3, groups: [docker_hosts] }\n",
    );
    write(
        dir.path(),
        "groups.yml",
        "groups:\n  hypervisors: {}\n  docker_hosts:\n    vars: { tier: docker, data_dir: /DATA }\n  test:\n    vars: { tier: test }\nvars:\n  tier: inventory\n  domain: picasoft.net\n  enabled: no\n",
    );
    write(dir.path(), "known_hosts", "[10.0.0.2]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n");
    let inv = inventory::load(dir.path()).result.expect("valid inventory");
    (dir, inv)
}

fn names(inv: &Inventory, pattern: Option<&str>) -> Vec<String> {
    select::select(inv, pattern)
        .unwrap()
        .iter()
        .map(|m| m.name().to_string())
        .collect()
}

#[test]
fn limit_patterns_select_by_name_group_site_and_glob() {
    let (_d, inv) = picasoft_like();
    assert_eq!(
        names(&inv, None),
        ["bob", "alice", "caribou", "pica01", "pica02", "media"]
    );
    assert_eq!(names(&inv, Some("all")), names(&inv, None));
    assert_eq!(names(&inv, Some("bob")), ["bob"]);
    assert_eq!(
        names(&inv, Some("compiegne")),
        ["alice", "caribou", "media"]
    );
    assert_eq!(names(&inv, Some("docker_hosts,!test")), ["pica02", "media"]);
    assert_eq!(names(&inv, Some("pica*")), ["pica01", "pica02"]);
    assert_eq!(
        names(&inv, Some("!hypervisors")),
        ["pica01", "pica02", "media"]
    );
    assert_eq!(names(&inv, Some("toulouse")), ["bob", "pica01", "pica02"]);
}

#[test]
fn a_limit_term_that_matches_nothing_is_an_error_with_a_suggestion() {
    let (_d, inv) = picasoft_like();
    let err = select::select(&inv, Some("bob,carbou"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`carbou` matches no machine"), "{err}");
    assert!(err.contains("Did you mean `caribou`?"), "{err}");
}

#[test]
fn variables_follow_the_documented_precedence() {
    let (_d, inv) = picasoft_like();
    let tier = |name: &str| {
        let m = inv.machine(name).unwrap();
        let v = vars::resolve(&inv, m);
        (
            v["tier"].value.as_str().unwrap().to_string(),
            v["tier"].scope.clone(),
        )
    };
    // inventory < site < groups (in list order) < machine
    assert_eq!(tier("caribou"), ("inventory".into(), "inventory".into()));
    assert_eq!(tier("bob"), ("host".into(), "host bob".into()));
    assert_eq!(
        tier("pica02"),
        ("docker".into(), "group docker_hosts".into())
    );
    assert_eq!(tier("pica01"), ("test".into(), "group test".into()));
    // A VM sees its hypervisor's site.
    let pica02 = vars::resolve(&inv, inv.machine("pica02").unwrap());
    assert_eq!(pica02["ntp"].scope, "site toulouse");
    // Strict booleans: `no` stays the string "no".
    assert_eq!(pica02["enabled"].value, serde_json::json!("no"));
    // Where the value came from is a real place.
    assert!(pica02["data_dir"].place.file.ends_with("groups.yml"));
    assert_eq!(pica02["data_dir"].place.line, 4);
}

#[test]
fn known_hosts_holds_inventory_keys_and_pinned_keys() {
    let (_d, inv) = picasoft_like();
    let text = inventory::known_hosts_text(&inv);
    assert!(text.contains(&format!("10.0.0.1 {KEY}\n")), "{text}");
    assert!(text.contains("[10.0.0.2]:2222 ssh-ed25519"), "{text}");
    assert!(!text.contains("10.0.0.3"), "caribou is not pinned: {text}");
    assert!(inventory::is_pinned(&inv, inv.machine("alice").unwrap()));
    assert!(!inventory::is_pinned(&inv, inv.machine("caribou").unwrap()));
    let path = inventory::write_known_hosts(&inv).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the run directory must be private");
}

#[test]
fn targets_carry_what_ssh_needs() {
    let (_d, inv) = picasoft_like();
    let alice = inventory::target(inv.machine("alice").unwrap()).unwrap();
    assert_eq!(alice.address, "10.0.0.2");
    assert_eq!(alice.port, Some(2222));
    assert_eq!(alice.user, None, "no user: the admin's ssh config decides");
    assert!(!alice.local);
}
