//! `meetbot sweep` (in progress).

use crate::config::Config;

/// Runs `meetbot sweep`. Returns the exit code.
pub async fn sweep_cmd(_cfg: Config, _dry_run: bool) -> i32 {
    eprintln!("meetbot sweep: not implemented yet");
    1
}
