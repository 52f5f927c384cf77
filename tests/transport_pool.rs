//! The pool and host-key policy against real sshd processes on loopback: a bad host (wrong or
//! unknown key, closed port, silent server) fails alone, with its own error, in bounded time,
//! while the other hosts are served; results come back in inventory order.

mod transport_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use picaops::transport::{
    run_on_hosts, Connector, ErrorKind, PoolEvent, PoolOptions, RemoteCommand, Target,
};
use transport_support::{free_port, keygen, Silent, Sshd, Workstation, NOSUDO_USER};

async fn hostname_everywhere(
    targets: &[Target],
    connector: Arc<Connector>,
) -> Vec<picaops::transport::HostOutcome<String>> {
    run_on_hosts(
        targets,
        connector,
        &PoolOptions { forks: 8 },
        None,
        |target, transport| async move {
            let out = transport
                .exec(&RemoteCommand::shell(format!("echo {}", target.name)))
                .await?;
            Ok(out.stdout_lossy().trim().to_string())
        },
    )
    .await
}

#[tokio::test]
async fn a_changed_host_key_is_refused_while_another_host_proceeds() {
    let ws = Workstation::new();
    let good = Sshd::start(&ws);
    let bad = Sshd::start(&ws);
    let good_t = good.pinned_target("good", NOSUDO_USER, &ws);
    // Pin some other ed25519 key for `bad`: what a man in the middle would look like.
    let other = ws.dir.path().join("other_key");
    keygen(&other);
    let other_key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_key: String = other_key
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let bad_t = bad.target("bad", NOSUDO_USER, &ws);
    ws.pin(&bad_t, &other_key);

    let outcomes = hostname_everywhere(&[bad_t, good_t], ws.connector()).await;
    assert_eq!(outcomes[0].target.name, "bad");
    let err = outcomes[0].result.as_ref().unwrap_err();
    assert_eq!(err.kind, ErrorKind::HostKeyChanged, "{err:?}");
    assert!(
        err.to_string().starts_with("bad: HOST KEY CHANGED"),
        "{err}"
    );
    assert!(err
        .detail
        .as_deref()
        .unwrap()
        .contains("IDENTIFICATION HAS CHANGED"));
    assert_eq!(outcomes[1].result.as_ref().unwrap(), "good");
    assert_eq!(
        bad.accepted_logins(),
        0,
        "no login on a host with a changed key"
    );
}

#[tokio::test]
async fn an_unknown_host_key_is_refused() {
    let ws = Workstation::new();
    let sshd = Sshd::start(&ws);
    let target = sshd.target("newcomer", NOSUDO_USER, &ws); // not pinned
    let outcomes = hostname_everywhere(&[target], ws.connector()).await;
    let err = outcomes[0].result.as_ref().unwrap_err();
    assert_eq!(err.kind, ErrorKind::HostKeyUnknown, "{err:?}");
    assert!(
        err.message.contains("picaops inventory pin newcomer"),
        "{err}"
    );
    assert_eq!(sshd.accepted_logins(), 0);
    // Strict means strict: the key was not added to the file behind our back.
    assert_eq!(std::fs::read_to_string(ws.known_hosts()).unwrap(), "");
}

#[tokio::test]
async fn dead_and_silent_hosts_fail_within_the_connect_timeout_and_others_succeed() {
    let ws = Workstation::new();
    let a = Sshd::start(&ws);
    let b = Sshd::start(&ws);
    let silent = Silent::start();
    let a_t = a.pinned_target("alpha", NOSUDO_USER, &ws);
    let b_t = b.pinned_target("beta", NOSUDO_USER, &ws);
    let mut closed = a.target("closed", NOSUDO_USER, &ws);
    closed.port = Some(free_port(&a.address));
    let mut hung = a.target("hung", NOSUDO_USER, &ws);
    hung.address = silent.address.clone();
    hung.port = Some(silent.port);

    let mut opts = ws.ssh_options();
    opts.connect_timeout = Duration::from_secs(2);
    let connector = Arc::new(Connector::with_options(opts));
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let targets = [a_t, closed, hung, b_t];
    let outcomes = run_on_hosts(
        &targets,
        connector,
        &PoolOptions { forks: 4 },
        Some(tx),
        |_t, transport| async move { transport.exec(&RemoteCommand::argv(["true"])).await },
    )
    .await;
    let elapsed = started.elapsed();

    let names: Vec<&str> = outcomes.iter().map(|o| o.target.name.as_str()).collect();
    assert_eq!(
        names,
        ["alpha", "closed", "hung", "beta"],
        "inventory order"
    );
    assert!(outcomes[0].result.as_ref().unwrap().success());
    assert!(outcomes[3].result.as_ref().unwrap().success());
    let refused = outcomes[1].result.as_ref().unwrap_err();
    assert_eq!(refused.kind, ErrorKind::ConnectionRefused, "{refused:?}");
    assert!(
        outcomes[1].duration < Duration::from_secs(1),
        "refusal is immediate"
    );
    let timeout = outcomes[2].result.as_ref().unwrap_err();
    assert_eq!(timeout.kind, ErrorKind::ConnectTimeout, "{timeout:?}");
    assert!(
        elapsed < Duration::from_secs(4),
        "bounded by the connect timeout: {elapsed:?}"
    );

    // Every host went queued -> connecting -> ... -> done, and the failures say so.
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    for (index, host) in names.iter().enumerate() {
        assert!(events.contains(&PoolEvent::Queued {
            index,
            host: host.to_string()
        }));
        assert!(events.contains(&PoolEvent::Connecting {
            index,
            host: host.to_string()
        }));
        let done = events
            .iter()
            .find_map(|e| match e {
                PoolEvent::Done { index: i, ok, .. } if *i == index => Some(*ok),
                _ => None,
            })
            .unwrap();
        assert_eq!(done, index == 0 || index == 3, "{host}");
    }
}

#[tokio::test]
async fn forks_bounds_how_many_hosts_are_worked_on_at_once() {
    let ws = Workstation::new();
    let sshds: Vec<Sshd> = (0..4).map(|_| Sshd::start(&ws)).collect();
    let targets: Vec<Target> = sshds
        .iter()
        .enumerate()
        .map(|(i, s)| s.pinned_target(&format!("h{i}"), NOSUDO_USER, &ws))
        .collect();
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let outcomes = run_on_hosts(
        &targets,
        ws.connector(),
        &PoolOptions { forks: 2 },
        None,
        move |_t, transport| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = r.fetch_add(1, SeqCst) + 1;
                p.fetch_max(now, SeqCst);
                let out = transport.exec(&RemoteCommand::argv(["sleep", "0.2"])).await;
                r.fetch_sub(1, SeqCst);
                out
            }
        },
    )
    .await;
    assert!(outcomes.iter().all(|o| o.result.is_ok()));
    assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_local_transport_runs_on_the_workstation() {
    let ws = Workstation::new();
    let local = Target {
        name: "workstation".into(),
        address: "localhost".into(),
        port: None,
        user: None,
        identity_file: None,
        become_root: false,
        jump: None,
        local: true,
    };
    let outcomes = hostname_everywhere(&[local], ws.connector()).await;
    assert_eq!(outcomes[0].result.as_ref().unwrap(), "workstation");
}
