//! `meetbot serve` (in progress).

use crate::config::Config;

/// Runs `meetbot serve`.
pub async fn serve_cmd(_cfg: Config) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
