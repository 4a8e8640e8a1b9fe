//! The meeting-platform seam.
//!
//! A platform joins a meeting and reports what happens in it as
//! [`PlatformEvent`]s: who is there (with display names), every participant's
//! encoded audio, and the meeting's state. Everything after that — decoding,
//! recording, transcription, commit, deletion — is the core's job.

pub mod janus;
pub mod replay;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::media::{OpusPacket, ParticipantId};
use crate::pii::Pii;

/// What a platform reports.
#[derive(Debug)]
pub enum PlatformEvent {
    /// The bot is waiting to be admitted (waiting room / lobby).
    Waiting,
    /// The bot is in the call and can receive audio.
    Admitted,
    /// Someone joined (or was already there when the bot arrived).
    ParticipantJoined {
        /// Platform id.
        id: ParticipantId,
        /// Display name.
        name: Pii<String>,
    },
    /// Someone left.
    ParticipantLeft {
        /// Platform id.
        id: ParticipantId,
    },
    /// One audio packet from one participant.
    Audio {
        /// Whose audio.
        id: ParticipantId,
        /// The packet.
        packet: OpusPacket,
    },
    /// The connection to the meeting was lost and the platform is rejoining: no audio
    /// arrives until [`PlatformEvent::Resumed`] (or the platform gives up with an error).
    /// Participants stay as they were until the rejoin tells otherwise.
    Interrupted {
        /// When, on the meeting clock (the one `OpusPacket::at_ms` uses), ms.
        at_ms: u64,
        /// Why, free of personal data.
        reason: String,
    },
    /// Back in the meeting after [`PlatformEvent::Interrupted`].
    Resumed {
        /// When, on the meeting clock, ms.
        at_ms: u64,
    },
    /// The meeting is over from the platform's point of view.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

/// Why a platform says the meeting ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A replay ran out of audio.
    ReplayFinished,
    /// The host ended the meeting.
    EndedByHost,
    /// The bot was removed.
    Kicked,
}

impl EndReason {
    /// Stable snake_case name for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ReplayFinished => "replay_finished",
            EndReason::EndedByHost => "call_ended_by_host",
            EndReason::Kicked => "bot_kicked_from_call",
        }
    }
}

/// A platform failure that ends the bot's attempt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The meeting URL cannot be used.
    #[error("invalid meeting URL: {0}")]
    InvalidUrl(String),
    /// A replay manifest or its audio is unusable.
    #[error("replay: {0}")]
    Replay(String),
    /// Anything else, already described.
    #[error("{0}")]
    Other(String),
}

/// A joined (or joinable) meeting.
#[async_trait]
pub trait MeetingPlatform: Send {
    /// Runs the meeting: sends events until the meeting ends (then returns
    /// `Ok`) or `leave` is cancelled (then leaves politely and returns `Ok`).
    /// A bounded channel gives back-pressure; a closed channel means the core
    /// stopped listening and the platform should leave.
    async fn run(
        self: Box<Self>,
        events: mpsc::Sender<PlatformEvent>,
        leave: CancellationToken,
    ) -> Result<(), PlatformError>;
}

/// Settings for the platforms that take any (from `[janus]`, `[transport]`, `[jitter]`).
#[derive(Debug, Clone, Default)]
pub struct PlatformSettings {
    /// Janus signalling.
    pub janus: janus::ws::JanusOptions,
    /// WebRTC media.
    pub transport: janus::transport::TransportConfig,
    /// Reorder buffer.
    pub jitter: janus::jitter::JitterConfig,
    /// Rejoin and vanished-publisher rules.
    pub rejoin: janus::platform::RejoinPolicy,
    /// Which remote ICE candidates media may be sent to.
    pub media: janus::candidates::MediaPolicy,
}

/// Opens the platform named by the URL's scheme (`replay:<manifest.json>`,
/// `janus+ws://host:port/<room>[?pin=…]`, `janus+wss://…`); `bot_name` is the
/// display name used where the platform shows one. Fails fast, before anything
/// is recorded, when the URL or what it names is unusable. Errors never repeat
/// the URL.
pub fn open(
    url: &Pii<String>,
    bot_name: &str,
    settings: &PlatformSettings,
) -> Result<Box<dyn MeetingPlatform>, PlatformError> {
    let raw = url.expose().trim();
    let Some((scheme, rest)) = raw.split_once(':') else {
        return Err(PlatformError::InvalidUrl(
            "no scheme; expected replay:<manifest.json> or janus+ws://host:port/<room>".into(),
        ));
    };
    match scheme {
        "replay" => Ok(Box::new(replay::ReplayPlatform::open(
            std::path::Path::new(rest),
        )?)),
        "janus+ws" | "janus+wss" => Ok(Box::new(
            janus::platform::JanusPlatform::open(url, bot_name)?
                .with_options(
                    settings.janus.clone(),
                    settings.transport.clone(),
                    settings.jitter.clone(),
                    settings.rejoin.clone(),
                )
                .with_media_policy(settings.media.clone()),
        )),
        other => Err(PlatformError::InvalidUrl(format!(
            "unknown scheme {:?}; supported: replay, janus+ws, janus+wss",
            truncate(other, 32)
        ))),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
