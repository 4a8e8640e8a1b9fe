//! Media types shared by platforms, the audio pipeline and the recording.

use std::fmt;

/// Stable identifier of a participant within one meeting, assigned by the
/// platform (a replay index, a Janus feed id). Not personal data: names travel
/// separately as [`crate::pii::Pii`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub String);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One encoded Opus packet as it arrives from a platform (RTP payload).
#[derive(Clone)]
pub struct OpusPacket {
    /// RTP-style sequence number (wraps at 2^16); gaps mean loss.
    pub seq: u16,
    /// Start of the packet's first sample on the meeting clock, in ms since
    /// the bot joined. All participants share this clock.
    pub at_ms: u64,
    /// The Opus payload.
    pub payload: bytes::Bytes,
}

impl fmt::Debug for OpusPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusPacket")
            .field("seq", &self.seq)
            .field("at_ms", &self.at_ms)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// A stretch of one participant's speech cut by the VAD, ready for STT.
pub struct Utterance {
    /// Whose speech it is.
    pub participant: ParticipantId,
    /// Meeting-clock start, ms.
    pub start_ms: u64,
    /// Meeting-clock end, ms.
    pub end_ms: u64,
    /// 16 kHz mono samples in [-1, 1]. Plaintext audio: memory only, never logged.
    pub samples: Vec<f32>,
}

impl fmt::Debug for Utterance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Utterance")
            .field("participant", &self.participant)
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("samples", &self.samples.len())
            .finish()
    }
}

/// One participant's Opus packets for a stretch of the meeting, read back from
/// the recording: payloads back to back in one zeroizing buffer.
#[derive(Default)]
pub struct PacketRun {
    /// `(seq, at_ms, offset, len)` of each packet in `payloads`, in recording order.
    pub packets: Vec<(u16, u64, usize, usize)>,
    /// The payloads. Plaintext audio: zeroized on drop.
    pub payloads: zeroize::Zeroizing<Vec<u8>>,
}

impl PacketRun {
    /// Appends one packet.
    pub fn push(&mut self, seq: u16, at_ms: u64, payload: &[u8]) {
        let need = self.payloads.len() + payload.len();
        if need > self.payloads.capacity() {
            // Grow by hand so no reallocation strands a plaintext copy: the
            // old buffer is zeroized when it drops.
            let mut bigger = zeroize::Zeroizing::new(Vec::with_capacity(need.max(4096) * 2));
            bigger.extend_from_slice(&self.payloads);
            self.payloads = bigger;
        }
        self.packets
            .push((seq, at_ms, self.payloads.len(), payload.len()));
        self.payloads.extend_from_slice(payload);
    }

    /// The packets as `(seq, at_ms, payload)`.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u64, &[u8])> + '_ {
        self.packets.iter().map(|&(seq, at, off, len)| {
            (
                seq,
                at,
                self.payloads.get(off..off + len).unwrap_or_default(),
            )
        })
    }
}

impl fmt::Debug for PacketRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketRun")
            .field("packets", &self.packets.len())
            .field("bytes", &self.payloads.len())
            .finish()
    }
}
