//! Transport errors as values: which host, what happened, what to do next, and the raw reason.
//!
//! SSH reports connection failures as free text on the master's stderr; [`classify_ssh_log`] turns
//! that text into an [`ErrorKind`] so callers (and scripts reading `--output json`) can tell an
//! unpinned host key from a changed one, a refused connection from a timeout, and so on. The raw
//! text stays in [`TransportError::detail`] for `-v`.

use std::fmt;
use std::time::Duration;

/// What kind of failure this is; stable names for JSON output (`kind` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The host's key is not in picaops' known_hosts file.
    HostKeyUnknown,
    /// The host presented a key different from the pinned one.
    HostKeyChanged,
    /// Nothing listens on the SSH port (or a firewall rejects it).
    ConnectionRefused,
    /// Connecting (TCP, key exchange or authentication) took longer than the connect timeout.
    ConnectTimeout,
    /// No route to the host / network unreachable.
    Unreachable,
    /// The host name does not resolve.
    NameResolution,
    /// The server refused every key offered.
    AuthFailed,
    /// The server closed the connection before authentication (overload, tcp wrappers, crash).
    ConnectionClosed,
    /// Any other failure to establish the connection.
    ConnectFailed,
    /// The connection dropped while a command was running or being started.
    Disconnected,
    /// A command ran longer than its timeout.
    CommandTimeout,
    /// The command ended without an exit status (killed by a signal).
    CommandKilled,
    /// `sudo -n` refused to escalate (asks for a password, user not in sudoers, no sudo).
    BecomeFailed,
    /// Writing a file on the host failed; the destination was left as it was.
    UploadFailed,
    /// Something on the workstation itself failed (spawning ssh, reading a local file).
    Local,
}

impl ErrorKind {
    /// Short words for summaries: `host key changed`, `connection refused`.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorKind::HostKeyUnknown => "host key not pinned",
            ErrorKind::HostKeyChanged => "HOST KEY CHANGED",
            ErrorKind::ConnectionRefused => "connection refused",
            ErrorKind::ConnectTimeout => "connect timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::NameResolution => "name does not resolve",
            ErrorKind::AuthFailed => "authentication failed",
            ErrorKind::ConnectionClosed => "connection closed by server",
            ErrorKind::ConnectFailed => "cannot connect",
            ErrorKind::Disconnected => "connection lost",
            ErrorKind::CommandTimeout => "command timeout",
            ErrorKind::CommandKilled => "command killed",
            ErrorKind::BecomeFailed => "sudo refused",
            ErrorKind::UploadFailed => "upload failed",
            ErrorKind::Local => "local error",
        }
    }

    /// True for failures that happened before any command could run on the host.
    pub fn is_connect_error(self) -> bool {
        matches!(
            self,
            ErrorKind::HostKeyUnknown
                | ErrorKind::HostKeyChanged
                | ErrorKind::ConnectionRefused
                | ErrorKind::ConnectTimeout
                | ErrorKind::Unreachable
                | ErrorKind::NameResolution
                | ErrorKind::AuthFailed
                | ErrorKind::ConnectionClosed
                | ErrorKind::ConnectFailed
        )
    }
}

/// A failure to reach a host or to run something on it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TransportError {
    /// Inventory name of the host.
    pub host: String,
    pub kind: ErrorKind,
    /// For people: what happened and what to do next (no host prefix).
    pub message: String,
    /// The raw reason (ssh's own words, the remote stderr), for `-v` and bug reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl TransportError {
    pub fn new(host: &str, kind: ErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            host: host.to_string(),
            kind,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let detail = detail.trim();
        self.detail = (!detail.is_empty()).then(|| detail.to_string());
        self
    }

    /// The command ran longer than allowed.
    pub fn command_timeout(host: &str, limit: Duration) -> Self {
        Self::new(
            host,
            ErrorKind::CommandTimeout,
            format!(
                "command still running after {}; picaops stopped waiting. It may still be \
                 running on the host: check with `ps` there before retrying, or raise --timeout.",
                human_duration(limit)
            ),
        )
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.host, self.message)
    }
}

impl std::error::Error for TransportError {}

pub(crate) fn human_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Reads what the ssh master wrote on stderr when it failed to connect and turns it into an
/// error for `host` (the inventory name) reached at `endpoint` (`address:port`, for messages).
pub fn classify_ssh_log(host: &str, endpoint: &str, log: &str) -> TransportError {
    let has = |needle: &str| log.contains(needle);
    let (kind, message) = if has("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || has("POSSIBLE DNS SPOOFING")
        || has("Host key for ") && has("has changed")
    {
        let presented = presented_fingerprint(log)
            .map(|fp| format!(" ({fp})"))
            .unwrap_or_default();
        (
            ErrorKind::HostKeyChanged,
            format!(
                "HOST KEY CHANGED — the key presented{presented} is not the pinned one. If the \
                 machine was reinstalled, verify the new fingerprint out of band and update \
                 `host_key:` in the inventory; otherwise someone may be intercepting the \
                 connection. Not connecting."
            ),
        )
    } else if has("host key is known for") && has("requested strict checking")
        || has("Host key verification failed")
    {
        // With strict checking, a key of a type we have not pinned also lands here: the pinned
        // key may be of another type. Both cases need the same human check.
        (
            ErrorKind::HostKeyUnknown,
            format!(
                "host key not pinned. Verify its fingerprint out of band, then add `host_key:` \
                 to the host in the inventory or run `picaops inventory pin {host}`."
            ),
        )
    } else if has("Connection refused") {
        (
            ErrorKind::ConnectionRefused,
            format!(
                "connection refused at {endpoint}: is sshd running, and is the port right in the \
                 inventory?"
            ),
        )
    } else if has("timed out") || has("Operation timed out") {
        (
            ErrorKind::ConnectTimeout,
            format!(
                "no answer from {endpoint} within the connect timeout: is the machine up and \
                 reachable (VPN, firewall)? Raise --connect-timeout for slow links."
            ),
        )
    } else if has("No route to host") || has("Network is unreachable") {
        (
            ErrorKind::Unreachable,
            format!("{endpoint} is unreachable from this workstation: check the network or VPN."),
        )
    } else if has("Could not resolve hostname") || has("Name or service not known") {
        (
            ErrorKind::NameResolution,
            "the address does not resolve: check `address:` in the inventory and DNS.".to_string(),
        )
    } else if has("Permission denied") || has("Too many authentication failures") {
        (
            ErrorKind::AuthFailed,
            "the server refused our keys: is your key loaded in the agent (`ssh-add -l`) or \
             `identity_file:` right, and is your public key authorized on the host?"
                .to_string(),
        )
    } else if has("Connection closed by")
        || has("Connection reset by peer")
        || has("kex_exchange_identification")
    {
        (
            ErrorKind::ConnectionClosed,
            format!(
                "the server at {endpoint} closed the connection before login (overloaded, \
                 MaxStartups, or access rules): retry, then check its sshd log."
            ),
        )
    } else {
        (
            ErrorKind::ConnectFailed,
            format!("cannot connect to {endpoint}; run with -v to see ssh's own words."),
        )
    };
    TransportError::new(host, kind, message).with_detail(log)
}

/// The `SHA256:...` fingerprint ssh prints after "key sent by the remote host is".
fn presented_fingerprint(log: &str) -> Option<&str> {
    let after = log.split("sent by the remote host is").nth(1)?;
    after
        .split_whitespace()
        .next()
        .map(|fp| fp.trim_end_matches('.'))
        .filter(|fp| fp.starts_with("SHA256:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real OpenSSH 9.2 messages and the kind each one must give.
    #[test]
    fn ssh_messages_are_classified() {
        let cases = [
            (
                "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n\
                 @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n\
                 Host key verification failed.",
                ErrorKind::HostKeyChanged,
            ),
            (
                "No ED25519 host key is known for [127.0.1.1]:2222 and you have requested \
                 strict checking.\r\nHost key verification failed.",
                ErrorKind::HostKeyUnknown,
            ),
            (
                "ssh: connect to host 127.0.1.9 port 2299: Connection refused",
                ErrorKind::ConnectionRefused,
            ),
            (
                "ssh: connect to host 10.1.1.1 port 22: Connection timed out",
                ErrorKind::ConnectTimeout,
            ),
            (
                "Connection timed out during banner exchange",
                ErrorKind::ConnectTimeout,
            ),
            (
                "ssh: connect to host 10.1.1.1 port 22: No route to host",
                ErrorKind::Unreachable,
            ),
            (
                "ssh: Could not resolve hostname nope: Name or service not known",
                ErrorKind::NameResolution,
            ),
            (
                "root@127.0.1.1: Permission denied (publickey).",
                ErrorKind::AuthFailed,
            ),
            (
                "kex_exchange_identification: read: Connection reset by peer",
                ErrorKind::ConnectionClosed,
            ),
            ("something new", ErrorKind::ConnectFailed),
        ];
        for (log, kind) in cases {
            let err = classify_ssh_log("bob", "127.0.1.1:22", log);
            assert_eq!(err.kind, kind, "classifying {log:?}");
            assert_eq!(err.detail.as_deref(), Some(log.trim()));
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let unknown = classify_ssh_log("bob", "x", "Host key verification failed.");
        assert!(unknown.to_string().contains("picaops inventory pin bob"));
        let changed = classify_ssh_log(
            "bob",
            "x",
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n\
             The fingerprint for the ED25519 key sent by the remote host is\r\n\
             SHA256:odDL+IZLPrxEaWsP+RQiRxWlw4+MhPCv1a4PcT2i8tk.\r\n",
        );
        assert!(changed.to_string().starts_with(
            "bob: HOST KEY CHANGED — the key presented \
             (SHA256:odDL+IZLPrxEaWsP+RQiRxWlw4+MhPCv1a4PcT2i8tk)"
        ));
        assert!(changed.message.contains("Not connecting"));
    }
}
