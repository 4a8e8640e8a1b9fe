//! Replay platform (stub to be replaced).
use super::*;
/// Replay.
pub struct ReplayPlatform;
impl ReplayPlatform {
    /// Opens.
    pub fn open(_p: &std::path::Path) -> Result<Self, PlatformError> {
        Err(PlatformError::Other("todo".into()))
    }
}
#[async_trait]
impl MeetingPlatform for ReplayPlatform {
    async fn run(
        self: Box<Self>,
        _e: mpsc::Sender<PlatformEvent>,
        _l: CancellationToken,
    ) -> Result<(), PlatformError> {
        Ok(())
    }
}
