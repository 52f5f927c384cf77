//! The local transport: the workstation itself (`Target.local`), commands run with `sh -c`.
//!
//! It builds the same command lines as the SSH transport (quoting, `sudo -n`, the atomic upload
//! script), so a module behaves the same whether its host is remote or this machine.

use std::process::Stdio;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::error::{ErrorKind, TransportError};
use super::{
    check_become, pump, upload, within_limit, CommandOutput, FileAttrs, FileContent, Input,
    RemoteCommand, Target, Transport, Uploaded,
};

/// Runs commands on the workstation.
#[derive(Debug)]
pub struct LocalTransport {
    target: Target,
    command_timeout: Option<std::time::Duration>,
}

impl LocalTransport {
    pub fn new(target: &Target, command_timeout: Option<std::time::Duration>) -> Self {
        LocalTransport {
            target: target.clone(),
            command_timeout,
        }
    }

    async fn run(
        &self,
        cmd: &RemoteCommand,
        input: Input<'_>,
    ) -> Result<CommandOutput, TransportError> {
        let host = self.target.name.as_str();
        let line = cmd.wire_line(&self.target);
        let started = Instant::now();
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                TransportError::new(host, ErrorKind::Local, format!("cannot start sh: {e}"))
            })?;
        let (stdout, stderr) = pump(
            child.stdin.take(),
            child.stdout.take(),
            child.stderr.take(),
            input,
        )
        .await
        .map_err(|e| {
            TransportError::new(
                host,
                ErrorKind::Local,
                format!("exchanging data with the command: {e}"),
            )
        })?;
        let status = child.wait().await.map_err(|e| {
            TransportError::new(host, ErrorKind::Local, format!("waiting for sh: {e}"))
        })?;
        let Some(exit_code) = status.code() else {
            return Err(TransportError::new(
                host,
                ErrorKind::CommandKilled,
                format!("the command was killed ({status})"),
            ));
        };
        let out = CommandOutput {
            exit_code,
            stdout,
            stderr,
            duration: started.elapsed(),
        };
        check_become(&self.target, cmd, &out)?;
        Ok(out)
    }

    async fn run_limited(
        &self,
        cmd: &RemoteCommand,
        input: Input<'_>,
    ) -> Result<CommandOutput, TransportError> {
        // Here a timeout does kill the command: dropping the child kills it (kill_on_drop).
        let limit = cmd.timeout.or(self.command_timeout);
        within_limit(&self.target.name, limit, self.run(cmd, input)).await
    }
}

impl Transport for LocalTransport {
    fn target(&self) -> &Target {
        &self.target
    }

    fn exec<'a>(
        &'a self,
        cmd: &'a RemoteCommand,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        self.run_limited(cmd, Input::of_command(cmd)).boxed()
    }

    fn upload<'a>(
        &'a self,
        content: &'a FileContent,
        dest: &'a str,
        attrs: &'a FileAttrs,
    ) -> BoxFuture<'a, Result<Uploaded, TransportError>> {
        upload::upload(
            &self.target.name,
            content,
            dest,
            attrs,
            move |cmd, input| async move { self.run_limited(&cmd, input).await },
        )
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        async { Ok(()) }.boxed()
    }
}
