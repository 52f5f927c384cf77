//! The SSH transport against real sshd processes on loopback: commands, stdin, atomic uploads,
//! privilege escalation, and one connection per host however many commands run.

mod transport_support;

use std::time::Duration;

use picaops::transport::{
    ErrorKind, FileAttrs, FileContent, RemoteCommand, SshTransport, Transport,
};
use transport_support::{have_sudo, Sshd, Workstation, NOSUDO_USER, SUDO_USER};

#[tokio::test]
async fn exec_returns_stdout_stderr_and_exit_code() {
    let ws = Workstation::new();
    let sshd = Sshd::start(&ws);
    let t = sshd.connect(NOSUDO_USER, &ws).await;

    let out = t
        .exec(&RemoteCommand::shell("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");

    // Argv words arrive unchanged, however odd.
    let words = ["printf", "[%s]", "a b", "it's", "$HOME", "`id`", ""];
    let out = t.exec(&RemoteCommand::argv(words)).await.unwrap();
    assert!(out.success());
    assert_eq!(out.stdout_lossy(), "[a b][it's][$HOME][`id`][]");

    // 127 (command not found) is an exit code like any other, with its stderr.
    let out = t
        .exec(&RemoteCommand::argv(["no-such-program-picaops"]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 127);
    assert!(out.stderr_lossy().contains("not found"));
    t.close().await.unwrap();
}

#[tokio::test]
async fn stdin_arrives_intact_even_binary_and_large() {
    let ws = Workstation::new();
    let sshd = Sshd::start(&ws);
    let t = sshd.connect(NOSUDO_USER, &ws).await;

    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let out = t
        .exec(&RemoteCommand::shell("sha256sum | cut -d' ' -f1").with_stdin(bytes))
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy().trim(), expected);

    // A command that echoes its input back while reading it must not deadlock.
    let echo: Vec<u8> = (0..2_000_000u32).map(|i| (i % 256) as u8).collect();
    let out = t
        .exec(&RemoteCommand::argv(["cat"]).with_stdin(echo.clone()))
        .await
        .unwrap();
    assert!(
        out.stdout == echo,
        "cat returned {} bytes",
        out.stdout.len()
    );
}

#[tokio::test]
async fn upload_is_atomic_and_sets_the_mode() {
    let ws = Workstation::new();
    let sshd = Sshd::start(&ws);
    let t = sshd.connect("root", &ws).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("my config.txt");
    let dest_s = dest.to_str().unwrap();
    std::fs::write(&dest, "old\n").unwrap();

    let attrs = FileAttrs {
        mode: Some(0o640),
        owner: Some(NOSUDO_USER.into()),
        group: Some("root".into()),
    };
    let up = t
        .upload(
            &FileContent::Bytes(b"new\0content\n".to_vec()),
            dest_s,
            &attrs,
        )
        .await
        .unwrap();
    assert_eq!(up.bytes, 12);
    assert_eq!(std::fs::read(&dest).unwrap(), b"new\0content\n");
    let meta = std::fs::metadata(&dest).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.gid(), 0);
    assert_ne!(meta.uid(), 0, "owner set to {NOSUDO_USER}");

    // A chown that fails leaves the old file and no temporary file.
    let bad = FileAttrs {
        mode: Some(0o600),
        owner: Some("no-such-user-picaops".into()),
        group: None,
    };
    let err = t
        .upload(&FileContent::Bytes(b"never\n".to_vec()), dest_s, &bad)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UploadFailed);
    assert!(err.message.contains("chown"), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"new\0content\n");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());

    // Into a directory that does not exist: refused, nothing created.
    let err = t
        .upload(
            &FileContent::Bytes(b"x".to_vec()),
            dir.path().join("nope/file").to_str().unwrap(),
            &FileAttrs::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UploadFailed);

    // From a local file.
    let src = dir.path().join("source.bin");
    std::fs::write(&src, vec![0xA5u8; 100_000]).unwrap();
    t.upload(&FileContent::LocalFile(src), dest_s, &FileAttrs::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), vec![0xA5u8; 100_000]);
}

#[tokio::test]
async fn an_upload_cut_off_by_a_dead_connection_leaves_no_partial_file() {
    let ws = Workstation::new();
    let sshd = Sshd::start(&ws);
    let t = sshd.connect("root", &ws).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.bin");
    std::fs::write(&dest, "old\n").unwrap();

    // Find the master's pid before starting, to kill it once the temporary file exists.
    let mut conn = openssh_mux_client::Connection::connect(t.control_socket())
        .await
        .unwrap();
    let master_pid = conn.send_alive_check().await.unwrap().get();

    let content = FileContent::Bytes(vec![7u8; 256 * 1024 * 1024]);
    let dest_s = dest.to_str().unwrap().to_string();
    let watched = dir.path().to_path_buf();
    let killer = tokio::spawn(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while leftovers(&watched).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "no temporary file appeared"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        unsafe { libc::kill(master_pid as i32, libc::SIGKILL) };
    });
    let result = t.upload(&content, &dest_s, &FileAttrs::default()).await;
    killer.await.unwrap();
    let err = result.expect_err("the upload must fail when its connection dies");
    assert!(
        matches!(
            err.kind,
            ErrorKind::Disconnected | ErrorKind::UploadFailed | ErrorKind::CommandKilled
        ),
        "{err:?}"
    );
    // The host side notices the end of input and removes its temporary file.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !leftovers(dir.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "temporary file left behind: {:?}",
            leftovers(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read(&dest).unwrap(), b"old\n");
}

#[tokio::test]
async fn one_connection_serves_many_commands_and_uploads() {
    let ws = Workstation::new();
    let sshd = Sshd::start(&ws);
    let t = sshd.connect(NOSUDO_USER, &ws).await;
    let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    for i in 0..20 {
        let out = t
            .exec(&RemoteCommand::shell(format!("echo {i}")))
            .await
            .unwrap();
        assert_eq!(out.stdout_lossy(), format!("{i}\n"));
    }
    // Concurrent commands share the same master too.
    let outs = futures::future::join_all((0..10).map(|_| {
        let cmd = RemoteCommand::argv(["true"]);
        let t = &t;
        async move { t.exec(&cmd).await }
    }))
    .await;
    assert!(outs.iter().all(|o| o.as_ref().unwrap().success()));
    t.upload(
        &FileContent::Bytes(b"x".to_vec()),
        dir.path().join("f").to_str().unwrap(),
        &FileAttrs::default(),
    )
    .await
    .unwrap();
    t.close().await.unwrap();
    assert_eq!(sshd.accepted_logins(), 1, "sshd log:\n{}", sshd.log());
    assert_eq!(sshd.connections(), 1);
}

#[tokio::test]
async fn become_uses_passwordless_sudo_and_refusal_is_clear() {
    if !have_sudo() {
        eprintln!("SKIPPED become test: sudo is not installed (apt-get install -y sudo)");
        return;
    }
    let ws = Workstation::new();
    let sshd = Sshd::start(&ws);

    let mut target = sshd.pinned_target("alice", SUDO_USER, &ws);
    target.become_root = true;
    let t = SshTransport::connect(&target, &ws.ssh_options())
        .await
        .unwrap();
    let out = t.exec(&RemoteCommand::argv(["id", "-u"])).await.unwrap();
    assert_eq!(out.stdout_lossy(), "0\n");
    // Explicitly as the login user.
    let out = t
        .exec(&RemoteCommand::argv(["id", "-un"]).with_become(false))
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), format!("{SUDO_USER}\n"));
    // Stdin still reaches the command through sudo.
    let out = t
        .exec(&RemoteCommand::argv(["cat"]).with_stdin(b"secret".to_vec()))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"secret");
    // An upload through sudo can give the file to root.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("root-owned");
    t.upload(
        &FileContent::Bytes(b"x".to_vec()),
        dest.to_str().unwrap(),
        &FileAttrs {
            mode: Some(0o600),
            owner: Some("root".into()),
            group: Some("root".into()),
        },
    )
    .await
    .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&dest).unwrap().uid(), 0);

    let mut target = sshd.pinned_target("carol", NOSUDO_USER, &ws);
    target.become_root = true;
    let t = SshTransport::connect(&target, &ws.ssh_options())
        .await
        .unwrap();
    let err = t
        .exec(&RemoteCommand::argv(["id", "-u"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BecomeFailed);
    assert!(err.message.contains("NOPASSWD"), "{err}");
    assert!(err.detail.unwrap().contains("sudo"));
}

#[tokio::test]
async fn a_command_past_its_timeout_is_reported_as_such() {
    let ws = Workstation::new();
    let sshd = Sshd::start(&ws);
    let t = sshd.connect(NOSUDO_USER, &ws).await;
    let started = std::time::Instant::now();
    let err = t
        .exec(&RemoteCommand::argv(["sleep", "5"]).with_timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::CommandTimeout);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The connection is still usable afterwards.
    assert!(t
        .exec(&RemoteCommand::argv(["true"]))
        .await
        .unwrap()
        .success());
}

/// Files picaops' upload left in `dir` (its temporary names start with a dot).
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".picaops-"))
        .collect()
}

#[tokio::test]
async fn a_jump_host_is_used_and_its_key_checked_strictly() {
    let ws = Workstation::new();
    let inner = Sshd::start(&ws);
    let gateway = Sshd::start(&ws);
    let mut target = inner.pinned_target("inner", NOSUDO_USER, &ws);
    target.jump = Some(format!(
        "{NOSUDO_USER}@{}:{}",
        gateway.address, gateway.port
    ));

    // Gateway not pinned yet: refused, and the message says it is the jump host.
    let err = SshTransport::connect(&target, &ws.ssh_options())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::HostKeyUnknown, "{err:?}");
    assert!(err.message.starts_with("via jump host"), "{err}");
    assert_eq!(inner.accepted_logins(), 0);

    gateway.pinned_target("gateway", NOSUDO_USER, &ws);
    let t = SshTransport::connect(&target, &ws.ssh_options())
        .await
        .unwrap();
    assert!(t
        .exec(&RemoteCommand::argv(["true"]))
        .await
        .unwrap()
        .success());
    assert_eq!(gateway.accepted_logins(), 1);
    assert_eq!(inner.accepted_logins(), 1);
}
