//! Inventories that must be refused before any machine is touched: an image tagged `latest` (or
//! not tagged), a host port published twice on one machine, a secret that cannot be resolved.
//! Each case under tests/fixtures/services/ is an inventory whose machines sit on TEST-NET
//! addresses where nothing answers: a run that contacted one would fail with exit 1 after the
//! connect timeout, not exit 2 at once. `expected.txt` lists the `file:line:column: message`
//! starts picaops must print, in order.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{picaops_on, text};

/// The fixture's directory. Git keeps no file mode but the executable bit, and the `files`
/// secret store refuses a secret others may read: its secrets are made 0600 first.
fn case(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/services")
        .join(name);
    for secret in std::fs::read_dir(dir.join("secrets")).into_iter().flatten() {
        let path = secret.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

fn refused_before_contact(name: &str, args: &[&str]) {
    let dir = case(name);
    let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
    let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    let started = Instant::now();
    let out = picaops_on(&dir.join("inventory"), args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{name}: took {:?}, as if a host had been contacted",
        started.elapsed()
    );
    assert!(stderr.contains("nothing was contacted"), "{stderr}");
    let prefix = format!("{}/", dir.display());
    let reported: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(": error: "))
        .map(|l| l.trim_start_matches(&prefix).replacen(": error: ", ": ", 1))
        .collect();
    assert_eq!(
        reported.len(),
        expected.len(),
        "{name}: want {expected:#?}\ngot {reported:#?}\n{stderr}"
    );
    for (got, want) in reported.iter().zip(&expected) {
        assert!(
            got.starts_with(want),
            "{name}:\n got  {got}\n want {want}…\n{stderr}"
        );
    }
    // The secret's value is never part of an error.
    assert!(!stderr.contains("tok-123456"), "{stderr}");
}

#[test]
fn an_image_tagged_latest_or_untagged_is_refused_at_its_template_line() {
    for args in [&["service", "plan"][..], &["service", "apply"]] {
        refused_before_contact("image-latest", args);
    }
    let out = picaops_on(
        &case("image-latest").join("inventory"),
        &["service", "plan"],
    );
    let stderr = text(&out.stderr);
    // The excerpt shows the template line, and the advice says what to write.
    assert!(
        stderr.contains(r#"    image: "picaops-lab/web:{{ version }}""#),
        "{stderr}"
    );
    assert!(stderr.contains("pin an exact version"), "{stderr}");
}

#[test]
fn a_port_published_twice_on_one_machine_is_refused() {
    for args in [&["service", "plan"][..], &["service", "apply"]] {
        refused_before_contact("port-clash", args);
    }
    let out = picaops_on(&case("port-clash").join("inventory"), &["service", "plan"]);
    assert!(
        text(&out.stderr).contains("note: "),
        "the first publisher is shown"
    );
}

#[test]
fn a_secret_that_cannot_be_resolved_is_refused_by_name() {
    for args in [&["service", "plan"][..], &["service", "apply"]] {
        refused_before_contact("missing-secret", args);
    }
}

#[test]
fn a_valid_inventory_passes_the_checks_and_only_then_contacts_its_machines() {
    let dir = case("valid").join("inventory");
    let out = picaops_on(&dir, &["inventory", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = picaops_on(&dir, &["service", "plan", "--connect-timeout", "1"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}{}", text(&out.stdout));
    assert!(!stderr.contains("nothing was contacted"), "{stderr}");
    assert!(!text(&out.stdout).contains("tok-123456"));
}

#[test]
fn the_labs_services_pass_every_check_and_pin_versions_the_lab_loads() {
    use picaops::lab::inventory as lab;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let key = |_: &str| {
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
            .to_string()
    };
    std::fs::create_dir_all(dir.join("inventory")).unwrap();
    std::fs::write(dir.join("inventory/sites.yml"), lab::sites_yml()).unwrap();
    std::fs::write(dir.join("inventory/hosts.yml"), lab::hosts_yml(&key)).unwrap();
    std::fs::write(dir.join("inventory/groups.yml"), lab::groups_yml()).unwrap();
    // The lab's services name the backup jobs that keep their data.
    std::fs::write(dir.join("inventory/backups.yml"), lab::backups_yml()).unwrap();
    std::fs::write(
        dir.join("inventory/secrets.yml"),
        "secrets: {store: files, dir: ../secrets}\n",
    )
    .unwrap();
    lab::write_services(dir).unwrap();
    let inv = match picaops::inventory::load(&dir.join("inventory")).result {
        Ok(inv) => inv,
        Err(d) => panic!("{d:#?}"),
    };
    let projects = picaops::service::prepare(&inv, None, &mut Default::default())
        .unwrap_or_else(|d| panic!("{d:#?}"));
    let sites: std::collections::BTreeSet<&str> = projects
        .iter()
        .map(|p| {
            let m = inv.machine(&p.machine).unwrap();
            inv.site_of(m).unwrap().name.as_str()
        })
        .collect();
    assert_eq!(projects.len(), 3);
    assert_eq!(sites.len(), 2, "three services across two sites");
    let loaded: Vec<&str> = picaops::lab::apps::APPS.iter().map(|a| a.name).collect();
    for p in &projects {
        for image in p.images.values() {
            assert!(
                loaded.contains(&image.as_str()),
                "{image} is not loaded into the lab hosts"
            );
        }
    }
    let broken = picaops::lab::apps::APPS
        .iter()
        .find(|a| a.env.contains(&("APP_HEALTHY", "no")))
        .expect("a broken version for rollback tests");
    assert_eq!(broken.name, "picaops-lab/web:2.0");
}
