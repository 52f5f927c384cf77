//! The atomic file write shared by every transport: a small POSIX sh script run on the host, with
//! the content streamed on its standard input.
//!
//! The script writes a temporary file next to the destination, checks that the expected number of
//! bytes (and SHA-256, where `sha256sum` exists) arrived, fsyncs it, applies mode and ownership,
//! then renames it over the destination. Any failure, including an interrupted transfer (the
//! input ends early when the connection drops), removes the temporary file and leaves the
//! destination untouched. Its exit codes 90..=97 name the step that failed.

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::error::{ErrorKind, TransportError};
use super::{CommandOutput, FileAttrs, FileContent, Input, RemoteCommand, Uploaded};

const SCRIPT: &str = r#"set -u
dest=$1 size=$2 sum=$3 mode=$4 owner=$5 group=$6
dir=$(dirname -- "$dest"); base=$(basename -- "$dest")
tmp=$(mktemp "$dir/.$base.picaops-XXXXXX") || { echo "cannot create a temporary file in $dir" >&2; exit 90; }
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 91' HUP INT TERM PIPE
cat > "$tmp" || { echo "writing $tmp failed" >&2; exit 92; }
got=$(wc -c < "$tmp")
[ "$got" -eq "$size" ] || { echo "received $got of $size bytes: the transfer was interrupted" >&2; exit 93; }
if command -v sha256sum >/dev/null 2>&1; then
  set -- $(sha256sum < "$tmp")
  [ "$1" = "$sum" ] || { echo "content checksum mismatch after transfer" >&2; exit 94; }
fi
if [ -n "$mode" ]; then chmod "$mode" "$tmp" || exit 95; fi
if [ -n "$owner$group" ]; then chown "$owner${group:+:$group}" "$tmp" || exit 96; fi
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$dest" || exit 97
trap - EXIT
sync -- "$dir" 2>/dev/null || true
"#;

/// Size and SHA-256 of the content, computed before sending so the host can check what arrived.
pub(crate) async fn fingerprint(
    host: &str,
    content: &FileContent,
) -> Result<(u64, String), TransportError> {
    match content {
        FileContent::Bytes(bytes) => Ok((bytes.len() as u64, hex::encode(Sha256::digest(bytes)))),
        FileContent::LocalFile(path) => {
            let local_err = |e: std::io::Error| {
                TransportError::new(
                    host,
                    ErrorKind::Local,
                    format!("cannot read {} on this workstation: {e}", path.display()),
                )
            };
            let mut file = tokio::fs::File::open(path).await.map_err(local_err)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buf).await.map_err(local_err)?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                hasher.update(&buf[..n]);
            }
            Ok((size, hex::encode(hasher.finalize())))
        }
    }
}

/// The whole upload, for any transport: `run` executes one command with the content on stdin.
pub(crate) async fn upload<'a, F, Fut>(
    host: &str,
    content: &'a FileContent,
    dest: &str,
    attrs: &FileAttrs,
    run: F,
) -> Result<Uploaded, TransportError>
where
    F: FnOnce(RemoteCommand, Input<'a>) -> Fut,
    Fut: std::future::Future<Output = Result<CommandOutput, TransportError>>,
{
    let started = std::time::Instant::now();
    let (size, sha256) = fingerprint(host, content).await?;
    let cmd = command(host, dest, attrs, size, &sha256)?;
    let out = run(cmd, Input::of_content(content)).await?;
    check(host, dest, &out)?;
    Ok(Uploaded {
        bytes: size,
        duration: started.elapsed(),
    })
}

/// The command that receives the content on stdin and installs it at `dest`.
pub(crate) fn command(
    host: &str,
    dest: &str,
    attrs: &FileAttrs,
    size: u64,
    sha256: &str,
) -> Result<RemoteCommand, TransportError> {
    if !dest.starts_with('/') || dest.ends_with('/') {
        return Err(TransportError::new(
            host,
            ErrorKind::UploadFailed,
            format!("upload destination {dest:?} must be an absolute file path"),
        ));
    }
    let mode = attrs.mode.map(|m| format!("{m:o}")).unwrap_or_default();
    let words = [
        "sh".to_string(),
        "-c".to_string(),
        SCRIPT.to_string(),
        "picaops-upload".to_string(),
        dest.to_string(),
        size.to_string(),
        sha256.to_string(),
        mode,
        attrs.owner.clone().unwrap_or_default(),
        attrs.group.clone().unwrap_or_default(),
    ];
    // Argv: every word is quoted, so a destination with spaces or quotes stays one argument.
    Ok(RemoteCommand::argv(words))
}

/// Turns the script's result into `Ok` or an error that says which step failed.
pub(crate) fn check(host: &str, dest: &str, out: &CommandOutput) -> Result<(), TransportError> {
    if out.success() {
        return Ok(());
    }
    let step = match out.exit_code {
        90 => "could not create a temporary file next to it (does the directory exist?)",
        91 => "the writer was interrupted by a signal",
        92 => "writing the temporary file failed (disk full?)",
        93 => "the transfer was interrupted before all bytes arrived",
        94 => "the content arrived corrupted (checksum mismatch)",
        95 => "chmod failed",
        96 => "chown failed (does the owner/group exist?)",
        97 => "the final rename failed",
        _ => "the upload script failed",
    };
    Err(TransportError::new(
        host,
        ErrorKind::UploadFailed,
        format!("writing {dest}: {step}; the file was left as it was."),
    )
    .with_detail(out.stderr_lossy()))
}
