//! The one place where picaops works on many hosts at once: a bounded pool over targets.
//!
//! [`run_on_hosts`] connects to each host (at most `forks` at a time), hands the connection to the
//! caller's work, closes it, and returns one [`HostOutcome`] per host in the order the targets were
//! given. One host's failure (or panic) never stops the others. Progress is reported as
//! [`PoolEvent`]s on a channel; drawing them is someone else's job (`crate::progress`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

use super::error::{ErrorKind, TransportError};
use super::{LocalTransport, SshOptions, SshTransport, Target, Transport};

/// Limits for a pool run.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// How many hosts are worked on at the same time.
    pub forks: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions { forks: 50 }
    }
}

/// What happened on one host, in the order the pool saw it. `host` is the inventory name;
/// `index` the host's position in the targets given to the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolEvent {
    /// Waiting for a free slot.
    Queued { index: usize, host: String },
    /// Opening the connection.
    Connecting { index: usize, host: String },
    /// Connected; the work is about to start.
    Connected { index: usize, host: String },
    /// The work is running.
    Running { index: usize, host: String },
    /// Finished. `error` is the short reason when `ok` is false.
    Done {
        index: usize,
        host: String,
        ok: bool,
        error: Option<String>,
        duration: Duration,
    },
}

/// One host's result.
#[derive(Debug)]
pub struct HostOutcome<T> {
    pub target: Target,
    /// The work's value, or why the host failed (connection, command, timeout...).
    pub result: Result<T, TransportError>,
    /// From the start of connecting to the end of closing.
    pub duration: Duration,
}

/// Opens transports: SSH for remote hosts, local for `Target.local`. Owns the directory holding
/// the SSH control sockets for as long as it lives.
#[derive(Debug)]
pub struct Connector {
    ssh: SshOptions,
    _control_dir: Option<tempfile::TempDir>,
}

impl Connector {
    /// A connector whose control sockets live in a fresh private directory (under
    /// `$XDG_RUNTIME_DIR`, or /tmp), removed when the connector is dropped.
    pub fn new(
        known_hosts: impl Into<PathBuf>,
        connect_timeout: Duration,
        command_timeout: Option<Duration>,
    ) -> Result<Self, TransportError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("picaops-ssh-")
            .tempdir_in(&base)
            .map_err(|e| {
                TransportError::new(
                    "(workstation)",
                    ErrorKind::Local,
                    format!(
                        "cannot create a directory for SSH control sockets in {}: {e}",
                        base.display()
                    ),
                )
            })?;
        let mut ssh = SshOptions::new(known_hosts, dir.path());
        ssh.connect_timeout = connect_timeout;
        ssh.command_timeout = command_timeout;
        Ok(Connector {
            ssh,
            _control_dir: Some(dir),
        })
    }

    /// A connector with explicit SSH options (the caller owns `opts.control_dir`).
    pub fn with_options(opts: SshOptions) -> Self {
        Connector {
            ssh: opts,
            _control_dir: None,
        }
    }

    pub fn ssh_options(&self) -> &SshOptions {
        &self.ssh
    }

    /// Changes SSH options (kex preference, keepalives) before connecting.
    pub fn ssh_options_mut(&mut self) -> &mut SshOptions {
        &mut self.ssh
    }

    /// Opens a transport to `target`.
    /// One connection to `target`, for a command that acts on one machine, with the connector
    /// that owns its control socket: keep both alive while the transport is in use.
    pub async fn connect_one(
        known_hosts: &std::path::Path,
        connect_timeout: Duration,
        target: &Target,
    ) -> Result<(Connector, Arc<dyn Transport>), TransportError> {
        let connector = Connector::new(known_hosts, connect_timeout, None)?;
        let transport = connector.connect(target).await?;
        Ok((connector, transport))
    }

    pub async fn connect(&self, target: &Target) -> Result<Arc<dyn Transport>, TransportError> {
        if target.local {
            return Ok(Arc::new(LocalTransport::new(
                target,
                self.ssh.command_timeout,
            )));
        }
        Ok(Arc::new(SshTransport::connect(target, &self.ssh).await?))
    }
}

/// Runs `work` on every target, at most `opts.forks` at once, and returns one outcome per target
/// in the order given. `events`, when given, receives the progress of each host.
///
/// `work` gets the target and its open transport; the pool closes the transport afterwards.
pub async fn run_on_hosts<T, F, Fut>(
    targets: &[Target],
    connector: Arc<Connector>,
    opts: &PoolOptions,
    events: Option<mpsc::UnboundedSender<PoolEvent>>,
    work: F,
) -> Vec<HostOutcome<T>>
where
    T: Send + 'static,
    F: Fn(Target, Arc<dyn Transport>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TransportError>> + Send + 'static,
{
    let emit = move |e: PoolEvent| {
        if let Some(tx) = &events {
            let _ = tx.send(e);
        }
    };
    let slots = Arc::new(Semaphore::new(opts.forks.max(1)));
    let work = Arc::new(work);
    let mut tasks = Vec::with_capacity(targets.len());
    for (index, target) in targets.iter().enumerate() {
        let host = target.name.clone();
        emit(PoolEvent::Queued {
            index,
            host: host.clone(),
        });
        let (slots, work, connector, target, emit) = (
            slots.clone(),
            work.clone(),
            connector.clone(),
            target.clone(),
            emit.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.expect("the pool never closes");
            let started = Instant::now();
            emit(PoolEvent::Connecting {
                index,
                host: host.clone(),
            });
            let result = match connector.connect(&target).await {
                Err(e) => Err(e),
                Ok(transport) => {
                    emit(PoolEvent::Connected {
                        index,
                        host: host.clone(),
                    });
                    emit(PoolEvent::Running {
                        index,
                        host: host.clone(),
                    });
                    let result = work(target.clone(), transport.clone()).await;
                    let _ = transport.close().await;
                    result
                }
            };
            let duration = started.elapsed();
            emit(PoolEvent::Done {
                index,
                host,
                ok: result.is_ok(),
                error: result.as_ref().err().map(|e| e.kind.describe().to_string()),
                duration,
            });
            HostOutcome {
                target,
                result,
                duration,
            }
        }));
    }

    let mut outcomes = Vec::with_capacity(tasks.len());
    for (task, target) in tasks.into_iter().zip(targets) {
        outcomes.push(match task.await {
            Ok(outcome) => outcome,
            // A panic in one host's work is that host's failure, not everyone's.
            Err(join_error) => HostOutcome {
                target: target.clone(),
                result: Err(TransportError::new(
                    &target.name,
                    ErrorKind::Local,
                    format!("picaops crashed while working on this host (a bug: please report it): {join_error}"),
                )),
                duration: Duration::ZERO,
            },
        });
    }
    outcomes
}
