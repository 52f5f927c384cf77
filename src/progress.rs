//! Progress display for multi-host work, fed by events from the transport pool.
//!
//! One bar (hosts done out of total, failures so far) and the names of the hosts in flight. It
//! draws on stderr and only when the caller decided progress is wanted (`Output.progress`: a
//! terminal, human output, not quiet). Modules never draw; they emit `PoolEvent`s.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::transport::PoolEvent;

/// Draws pool events until the sender side is dropped, then clears the bar.
/// Returns a handle to await before printing results (so the bar is gone by then).
pub fn spawn(
    total: usize,
    mut events: mpsc::UnboundedReceiver<PoolEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} hosts {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        let mut in_flight: BTreeMap<usize, (String, &'static str)> = BTreeMap::new();
        let mut failed = 0usize;
        while let Some(event) = events.recv().await {
            match event {
                PoolEvent::Queued { .. } => {}
                PoolEvent::Connecting { index, host } => {
                    in_flight.insert(index, (host, "connecting"));
                }
                PoolEvent::Connected { index, host } | PoolEvent::Running { index, host } => {
                    in_flight.insert(index, (host, "running"));
                }
                PoolEvent::Done { index, ok, .. } => {
                    in_flight.remove(&index);
                    if !ok {
                        failed += 1;
                    }
                    bar.inc(1);
                }
            }
            bar.set_message(message(&in_flight, failed));
        }
        bar.finish_and_clear();
    })
}

fn message(in_flight: &BTreeMap<usize, (String, &'static str)>, failed: usize) -> String {
    let mut msg = String::new();
    if failed > 0 {
        msg.push_str(&format!("({failed} failed) "));
    }
    if !in_flight.is_empty() {
        let names: Vec<&str> = in_flight
            .values()
            .map(|(h, _)| h.as_str())
            .take(6)
            .collect();
        msg.push_str(&format!("· {}", names.join(" ")));
        if in_flight.len() > names.len() {
            msg.push_str(&format!(" +{}", in_flight.len() - names.len()));
        }
    }
    msg
}

/// Runs multi-host work on a fresh async runtime, with the progress display when `out` wants
/// one (the commands that are not a site run use it). `Ok(None)`: interrupted by Ctrl-C. `Err`: the runtime could not start. Dropping the
/// runtime drops unfinished host tasks; each closes its SSH master.
pub fn run_with_progress<T, F, Fut>(
    out: &crate::output::Output,
    hosts: usize,
    work: F,
) -> Result<Option<T>, std::io::Error>
where
    F: FnOnce(Option<tokio::sync::mpsc::UnboundedSender<crate::transport::PoolEvent>>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let (events, display) = if out.progress {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(spawn(hosts, rx)))
        } else {
            (None, None)
        };
        let result = tokio::select! {
            result = work(events) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        };
        // The sender was moved into the work and is dropped by now: the bar clears itself.
        if let Some(display) = display {
            let _ = display.await;
        }
        result
    });
    drop(runtime);
    Ok(result)
}
