//! Ctrl-C: the first one stops the command cleanly, a second one exits at once.
//!
//! The first SIGINT sets a flag and wakes the command's async driver ([`crate::cmd::block_on`]),
//! which drops the async work (between two steps, so no file is half-written: every workspace
//! file is written atomically in one step), lets blocking work reach its next step boundary
//! (the infrastructure phase checks [`flag`] between nodes), and ends with
//! [`Interrupted`] naming the command to re-run (exit status 130). A second SIGINT exits with
//! status 130 at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static PRESSES: AtomicUsize = AtomicUsize::new(0);
static NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Exit status of an interrupted command (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The command stopped because of Ctrl-C; `rerun` says how to continue.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; the workspace is consistent: run `{rerun}` again to continue")]
pub struct Interrupted {
    pub rerun: String,
}

/// Installs the SIGINT handler (once, at start-up).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if PRESSES.fetch_add(1, Ordering::SeqCst) == 0 {
            INTERRUPTED.store(true, Ordering::SeqCst);
            NOTIFY.notify_one();
            eprintln!("\nInterrupted: stopping cleanly (press Ctrl-C again to quit at once)");
        } else {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    });
}

/// The flag blocking work checks between steps.
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

/// Resolves at the first Ctrl-C.
pub async fn wait() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return;
    }
    NOTIFY.notified().await;
}
