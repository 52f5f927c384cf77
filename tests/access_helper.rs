//! The `picaops-access` helper against directories that misbehave, run as sshd runs it
//! (`picaops-access keys LOGIN UID`, the real binary, a job file in a temporary directory).
//!
//! The directory here is a test fake: a small LDAP server written below (raw BER over TCP) that
//! answers with what slapd cannot be made to send — one entry of 300 MB, an endless stream of
//! entries, several entries for one login, end dates that are no day count. Everything else
//! about access is tested against the lab's real slapd (tests/access_lab.rs).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b";

/// BER: a tag and a length (short or long form).
fn hdr(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = hdr(tag, content.len());
    out.extend_from_slice(content);
    out
}

fn int(n: i64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut i = 0;
    while i < 7
        && ((bytes[i] == 0 && bytes[i + 1] & 0x80 == 0)
            || (bytes[i] == 0xff && bytes[i + 1] & 0x80 != 0))
    {
        i += 1;
    }
    tlv(0x02, &bytes[i..])
}

/// One attribute: SEQUENCE { type, SET OF value }.
fn attr(name: &str, values: &[&str]) -> Vec<u8> {
    let vals: Vec<u8> = values
        .iter()
        .flat_map(|v| tlv(0x04, v.as_bytes()))
        .collect();
    let mut inner = tlv(0x04, name.as_bytes());
    inner.extend(tlv(0x31, &vals));
    tlv(0x30, &inner)
}

/// A SearchResultEntry message.
fn entry(msgid: i64, dn: &str, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut e = tlv(0x04, dn.as_bytes());
    e.extend(tlv(0x30, &attrs.concat()));
    let mut m = int(msgid);
    m.extend(tlv(0x64, &e));
    tlv(0x30, &m)
}

fn done(msgid: i64) -> Vec<u8> {
    let mut r = tlv(0x0a, &[0]);
    r.extend(tlv(0x04, b""));
    r.extend(tlv(0x04, b""));
    let mut m = int(msgid);
    m.extend(tlv(0x65, &r));
    tlv(0x30, &m)
}

fn ann_attrs(expire: Option<&str>) -> Vec<Vec<u8>> {
    let mut a = vec![
        attr("uid", &["ann"]),
        attr("uidNumber", &["2000"]),
        attr("gidNumber", &["502"]),
        attr("host", &["*"]),
        attr("sshPublicKey", &[KEY]),
    ];
    if let Some(e) = expire {
        a.push(attr("shadowExpire", &[e]));
    }
    a
}

/// What the fake directory answers to a search.
#[derive(Clone)]
enum Answer {
    /// These entries (attribute lists), then success.
    Entries(Vec<Vec<Vec<u8>>>),
    /// One entry for ann whose key is this many bytes.
    Huge(usize),
    /// Entries, each about 64 KiB, until the client goes away.
    Endless,
}

/// Reads one BER element (tag, length, content) from the stream.
fn read_element(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let mut out = head.to_vec();
    let len = if head[1] & 0x80 == 0 {
        head[1] as usize
    } else {
        let n = (head[1] & 0x7f) as usize;
        let mut b = vec![0u8; n];
        s.read_exact(&mut b).ok()?;
        out.extend(&b);
        b.iter().fold(0usize, |a, &x| (a << 8) | x as usize)
    };
    let mut content = vec![0u8; len];
    s.read_exact(&mut content).ok()?;
    out.extend(content);
    Some(out)
}

/// Splits BER content into its elements: (tag, content).
fn elements(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let tag = b[0];
        let (len, skip) = if b[1] & 0x80 == 0 {
            (b[1] as usize, 2)
        } else {
            let n = (b[1] & 0x7f) as usize;
            let len = b[2..2 + n]
                .iter()
                .fold(0usize, |a, &x| (a << 8) | x as usize);
            (len, 2 + n)
        };
        out.push((tag, b[skip..skip + len].to_vec()));
        b = &b[skip + len..];
    }
    out
}

/// What the fake saw of each search: (sizeLimit, attributes asked).
type Seen = Arc<Mutex<Vec<(i64, Vec<String>)>>>;

fn serve(mut s: TcpStream, answer: Answer, seen: Seen) {
    while let Some(msg) = read_element(&mut s) {
        let parts = elements(&elements(&msg)[0].1);
        let msgid = parts[0].1.iter().fold(0i64, |a, &x| (a << 8) | x as i64);
        let (op, body) = (&parts[1].0, &parts[1].1);
        if *op != 0x63 {
            if *op == 0x42 {
                return; // unbind
            }
            continue;
        }
        let req = elements(body);
        let size_limit = req[3].1.iter().fold(0i64, |a, &x| (a << 8) | x as i64);
        let attrs = elements(&req[7].1)
            .into_iter()
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect();
        seen.lock().unwrap().push((size_limit, attrs));
        let r = match &answer {
            Answer::Entries(list) => {
                let mut out = Vec::new();
                for (i, a) in list.iter().enumerate() {
                    out.extend(entry(msgid, &format!("uid=p{i},ou=People,dc=x"), a));
                }
                out.extend(done(msgid));
                s.write_all(&out)
            }
            Answer::Huge(n) => huge(&mut s, msgid, *n),
            Answer::Endless => (0u64..)
                .map(|i| {
                    let uid = format!("p{i}");
                    let pad = "A".repeat(64 << 10);
                    entry(
                        msgid,
                        &format!("uid={uid},ou=People,dc=x"),
                        &[attr("uid", &[&uid]), attr("sshPublicKey", &[&pad])],
                    )
                })
                .try_for_each(|e| s.write_all(&e)),
        };
        if r.is_err() {
            return;
        }
    }
}

/// Writes one entry for ann whose sshPublicKey is `n` bytes, streamed (never held in memory).
fn huge(s: &mut TcpStream, msgid: i64, n: usize) -> std::io::Result<()> {
    let value_hdr = hdr(0x04, n);
    let set_hdr = hdr(0x31, value_hdr.len() + n);
    let name = tlv(0x04, b"sshPublicKey");
    let attr_len = name.len() + set_hdr.len() + value_hdr.len() + n;
    let attr_hdr = hdr(0x30, attr_len);
    let small: Vec<u8> = ann_attrs(None)[..4].concat();
    let attrs_len = small.len() + attr_hdr.len() + attr_len;
    let attrs_hdr = hdr(0x30, attrs_len);
    let dn = tlv(0x04, b"uid=ann,ou=People,dc=x");
    let entry_len = dn.len() + attrs_hdr.len() + attrs_len;
    let entry_hdr = hdr(0x64, entry_len);
    let id = int(msgid);
    let msg_hdr = hdr(0x30, id.len() + entry_hdr.len() + entry_len);
    for part in [
        &msg_hdr, &id, &entry_hdr, &dn, &attrs_hdr, &small, &attr_hdr, &name, &set_hdr, &value_hdr,
    ] {
        s.write_all(part)?;
    }
    let chunk = vec![b'A'; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        s.write_all(&chunk[..k])?;
        left -= k;
    }
    s.write_all(&done(msgid))
}

/// Starts the fake directory; returns its port and what it saw.
fn fake_directory(answer: Answer) -> (u16, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (a, seen) = (answer.clone(), seen2.clone());
            std::thread::spawn(move || serve(s, a, seen));
        }
    });
    (port, seen)
}

fn job_file(dir: &Path, port: u16) -> std::path::PathBuf {
    let cfg = serde_json::json!({
        "host": "pica01",
        "url": format!("ldap://127.0.0.1:{port}"),
        "people": "ou=People,dc=x",
        "hosts_attribute": "host",
        "ca_file": null,
        "bind_dn": null,
        "password_file": null,
        "levels": [{"name": "member", "gid": 502, "groups": []}],
        "first_uid": 2000,
        "cache_dir": dir.join("cache"),
        "state_dir": dir.join("state"),
        "cache_lifetime_secs": 3600,
        "timeout_ms": 1000,
    });
    let path = dir.join("access.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    path
}

/// One `keys` call of the real helper: (stdout, exit status, wall time, peak RSS in KiB).
struct Call {
    stdout: String,
    status: i32,
    took: Duration,
    max_rss_kib: i64,
}

// The child is reaped by wait4 (for its own rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn keys(job: &Path, args: &[&str]) -> Call {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_picaops-access"))
        .arg("--config")
        .arg(job)
        .arg("keys")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the helper starts");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for this one child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child, with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let took = started.elapsed();
    Call {
        stdout: reader.join().unwrap(),
        status,
        took,
        max_rss_kib: usage.ru_maxrss,
    }
}

#[test]
fn the_fake_directory_speaks_ldap_well_enough_to_let_a_valid_person_in() {
    // Positive control for every test below: a well-formed answer is served, with its date.
    let tmp = tempfile::tempdir().unwrap();
    let (port, seen) = fake_directory(Answer::Entries(vec![ann_attrs(Some("2932896"))]));
    let c = keys(&job_file(tmp.path(), port), &["ann", "2000"]);
    assert_eq!(
        c.stdout,
        format!("expiry-time=\"99991231Z\" {KEY}\n"),
        "status {}",
        c.status
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].0, 2,
        "the search asks for at most 2 entries (sizelimit)"
    );
    assert!(
        !seen[0].1.iter().any(|a| a == "*" || a == "+"),
        "only named attributes are asked: {:?}",
        seen[0].1
    );
}

#[test]
fn an_end_date_that_is_no_day_count_gets_no_key_from_the_helper() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["-2", "abc", "2027-03-15", "", "19000.5"] {
        let (port, _) = fake_directory(Answer::Entries(vec![ann_attrs(Some(bad))]));
        let c = keys(&job_file(tmp.path(), port), &["ann", "2000"]);
        assert_eq!(c.stdout, "", "shadowExpire {bad:?} served a key");
    }
    // ... and none from the cache afterwards either: a valid answer first fills the cache.
    let (port, _) = fake_directory(Answer::Entries(vec![ann_attrs(Some("2932896"))]));
    assert!(!keys(&job_file(tmp.path(), port), &["ann"])
        .stdout
        .is_empty());
    let (port, _) = fake_directory(Answer::Entries(vec![ann_attrs(Some("-2"))]));
    assert_eq!(keys(&job_file(tmp.path(), port), &["ann"]).stdout, "");
    let job = job_file(tmp.path(), 1); // nothing listens on port 1: the cache would answer
    assert_eq!(
        keys(&job, &["ann"]).stdout,
        "",
        "the entry refused by the directory was dropped from the cache"
    );
}

#[test]
fn the_helper_serves_only_the_login_asked_with_the_uid_sshd_gives() {
    let tmp = tempfile::tempdir().unwrap();
    // ann's entry answers a lookup for mallory (a second uid, or a directory that ignores the filter).
    let mut two = ann_attrs(None);
    two[0] = attr("uid", &["ann", "mallory"]);
    let (port, _) = fake_directory(Answer::Entries(vec![two]));
    let job = job_file(tmp.path(), port);
    assert_eq!(keys(&job, &["mallory", "2001"]).stdout, "");
    assert_eq!(
        keys(&job, &["ann", "2000"]).stdout,
        "",
        "several uids: nobody"
    );
    let (port, _) = fake_directory(Answer::Entries(vec![ann_attrs(None)]));
    let job = job_file(tmp.path(), port);
    assert_eq!(
        keys(&job, &["mallory", "2001"]).stdout,
        "",
        "uid ann ≠ mallory"
    );
    assert_eq!(
        keys(&job, &["ann", "2001"]).stdout,
        "",
        "uidNumber 2000 ≠ %U 2001"
    );
    assert_eq!(
        keys(&job, &["ann", "x"]).stdout,
        "",
        "a %U that is no number"
    );
    assert_eq!(keys(&job, &["ann", "2000"]).stdout, format!("{KEY}\n"));
    // Two entries for one login: refused, and the cache (just filled) does not stand in.
    let (port, _) = fake_directory(Answer::Entries(vec![ann_attrs(None), ann_attrs(None)]));
    assert_eq!(
        keys(&job_file(tmp.path(), port), &["ann", "2000"]).stdout,
        ""
    );
    assert_eq!(keys(&job_file(tmp.path(), 1), &["ann", "2000"]).stdout, "");
}

/// Peak RSS allowed to one `keys` call (its address space is capped at 256 MiB).
const MAX_RSS_KIB: i64 = 260 << 10;

#[test]
fn one_huge_entry_neither_takes_the_memory_nor_keeps_the_login_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, _) = fake_directory(Answer::Huge(300 << 20));
    let c = keys(&job_file(tmp.path(), port), &["ann", "2000"]);
    eprintln!(
        "huge entry: {:?}, peak RSS {} MiB, wait status {}",
        c.took,
        c.max_rss_kib >> 10,
        c.status
    );
    assert_eq!(c.stdout, "", "no key from a 300 MB entry");
    assert!(c.took < Duration::from_millis(1500), "took {:?}", c.took);
    assert!(
        c.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} MiB",
        c.max_rss_kib >> 10
    );
}

#[test]
fn an_endless_answer_neither_takes_the_memory_nor_keeps_the_login_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, _) = fake_directory(Answer::Endless);
    let c = keys(&job_file(tmp.path(), port), &["ann", "2000"]);
    eprintln!(
        "endless answer: {:?}, peak RSS {} MiB, wait status {}",
        c.took,
        c.max_rss_kib >> 10,
        c.status
    );
    assert_eq!(c.stdout, "");
    // Refused when the second entry arrives, not read until the 1 s timeout (all the while
    // holding what it read: the security probe measured 390 MB before the fix).
    assert!(
        c.took < Duration::from_millis(800),
        "took {:?}: the answer was read until the timeout",
        c.took
    );
    assert!(
        c.max_rss_kib < MAX_RSS_KIB,
        "peak RSS {} MiB",
        c.max_rss_kib >> 10
    );
}

/// Not a test on its own: the body of the child process that
/// `the_keys_call_is_bounded_by_a_hard_alarm_and_an_address_space_limit` starts (this same test
/// binary, with PICAOPS_TEST_BOUND_CHILD set). It bounds itself as `keys` does, then overruns.
#[test]
fn bound_child() {
    let Some(mode) = std::env::var_os("PICAOPS_TEST_BOUND_CHILD") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let job = job_file(tmp.path(), 1);
    let mut cfg = picaops::access::host::HostConfig::read(&job).unwrap();
    cfg.timeout_ms = 200;
    picaops::access::host::bound_keys_call(&cfg);
    if mode == "sleep" {
        std::thread::sleep(Duration::from_secs(10));
    } else {
        let big = vec![1u8; 300 << 20];
        std::hint::black_box(&big);
    }
    println!("SURVIVED");
}

#[test]
fn the_keys_call_is_bounded_by_a_hard_alarm_and_an_address_space_limit() {
    use std::os::unix::process::ExitStatusExt;
    for (mode, signal) in [("sleep", libc::SIGALRM), ("alloc", libc::SIGABRT)] {
        let started = Instant::now();
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "bound_child", "--nocapture", "--test-threads=1"])
            .env("PICAOPS_TEST_BOUND_CHILD", mode)
            .output()
            .unwrap();
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("SURVIVED"),
            "{mode}: the child ran on: {stdout}"
        );
        assert_eq!(
            out.status.signal(),
            Some(signal),
            "{mode}: {:?}",
            out.status
        );
        if mode == "sleep" {
            // 200 ms of timeout + 300 ms of grace, then SIGALRM.
            assert!(took < Duration::from_millis(1500), "{mode}: {took:?}");
            assert!(took >= Duration::from_millis(450), "{mode}: {took:?}");
        }
    }
}
