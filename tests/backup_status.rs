//! `picaops backup status` when the machines are gone, with the real binary and the real ssh
//! client against silent TCP servers (a host that accepts connections and never speaks, as a
//! host behind a dead link or a hung sshd does): it gives up on each machine within
//! `--connect-timeout`, tries each machine once, and says it cannot tell rather than "no
//! successful backup yet". (With the repository reachable, see tests/backup_status_lab.rs.)

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A TCP server on loopback that accepts connections, counts them and never says anything.
struct Silent {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        });
        Silent { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

/// Two sites, a data host at one and the repository's host at the other, both silent.
fn inventory(dir: &std::path::Path, data: &Silent, repo: &Silent) {
    std::fs::write(
        dir.join("site.yml"),
        format!(
            "sites:\n  toulouse: {{ backs_up_to: compiegne }}\n  compiegne: {{ backs_up_to: toulouse }}\n\
             hosts:\n  \
             bob: {{ site: toulouse, address: 127.0.0.1, port: {}, host_key: {KEY} }}\n  \
             alice: {{ site: compiegne, address: 127.0.0.1, port: {}, host_key: {KEY} }}\n",
            data.port, repo.port
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("backups.yml"),
        "backups:\n  bob-app:\n    host: bob\n    paths: [/srv/app]\n    \
         schedule: \"*-*-* 02:30\"\n    retention: { keep_daily: 7 }\n    \
         repository: { kind: sftp, host: alice, path: /srv/restic/bob }\n    \
         password: restic-bob\n    max_age: 26h\n",
    )
    .unwrap();
}

#[test]
fn with_both_sites_silent_status_gives_up_within_the_connect_timeout_once_per_machine() {
    let (data, repo) = (Silent::start(), Silent::start());
    let dir = tempfile::tempdir().unwrap();
    inventory(dir.path(), &data, &repo);
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picaops"))
        .env("NO_COLOR", "1")
        .env_remove("PICAOPS_INVENTORY")
        .arg("-i")
        .arg(dir.path())
        .args([
            "--output",
            "json",
            "backup",
            "status",
            "--connect-timeout",
            "1",
        ])
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // Three calls on the first round (data side, and the repository's two sides on one
    // machine), all given up within the second; the repository machine is not tried again.
    assert!(
        elapsed < Duration::from_secs(5),
        "backup status --connect-timeout 1 took {elapsed:?} with silent machines:\n{stderr}"
    );
    assert_eq!(
        (data.accepted(), repo.accepted()),
        (1, 1),
        "connections to the data host and to the repository's host:\n{stderr}"
    );
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let job = &doc["jobs"][0];
    assert_eq!(job["job"], "bob-app", "{doc}");
    assert_eq!(job["state"], "unknown", "{doc}");
    assert_eq!(job["data_host_reachable"], false, "{doc}");
    assert_eq!(job["repository_reachable"], false, "{doc}");
    let reason = job["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("data host bob unreachable (since unknown)")
            && reason.contains("repository host alice unreachable too")
            && !reason.contains("no successful backup yet"),
        "{reason}"
    );
}
