//! The tokio shell around [`JanusSession`]: one WebSocket, one timer, one command channel.
//!
//! [`JanusClient::connect`] opens the WebSocket (subprotocol `janus-protocol`, rustls with the
//! Mozilla roots for `wss`, bounded by `connect_timeout`) and spawns a driver task that runs a
//! single `select!` over the socket, the session's next deadline and the client's commands. The
//! shell makes no decisions: every frame, tick and command goes into the state machine, and
//! whatever it outputs is sent on the socket or forwarded as a [`ClientEvent`].
//!
//! The event stream ends (`recv()` returns `None`) after a terminal event: `Left`, `Fatal`,
//! `Kicked` or `RoomDestroyed`. Dropping the [`JanusClient`] leaves the room politely.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant as TokioInstant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use super::signalling::{
    JanusSession, Offer, SessionConfig, SigEvent, SigOutput, MAX_MESSAGE_BYTES,
};
use super::url::JanusUrl;

/// The WebSocket subprotocol Janus speaks.
pub const SUBPROTOCOL: &str = "janus-protocol";
/// Capacity of the event channel. Signalling events are rare; keep draining it.
pub const EVENT_CHANNEL: usize = 64;

/// Knobs of the Janus client (config section `[janus]`).
#[derive(Clone, Debug)]
pub struct JanusOptions {
    /// Bound on TCP + TLS + WebSocket handshake.
    pub connect_timeout: Duration,
    /// How often to send `keepalive` (Janus's session timeout defaults to 60 s).
    pub keepalive_interval: Duration,
    /// How long any request may wait for its final reply; also bounds each socket write and
    /// the close handshake.
    pub request_timeout: Duration,
    /// Most publishers tracked and subscribed to.
    pub max_publishers: usize,
    /// Connect only to these addresses (the ones the URL guard vetted), in
    /// order, instead of resolving the URL's host again: a DNS answer that
    /// changed since the check (rebinding) cannot send the bot inside. TLS
    /// still verifies the URL's host name. Empty: resolve normally.
    pub pinned_addrs: Vec<std::net::SocketAddr>,
}

impl Default for JanusOptions {
    fn default() -> Self {
        JanusOptions {
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(25),
            request_timeout: Duration::from_secs(10),
            max_publishers: 64,
            pinned_addrs: Vec::new(),
        }
    }
}

/// What the client reports.
#[derive(Debug)]
pub enum ClientEvent {
    /// Janus sent an offer: answer it with the media transport, then [`JanusClient::answer`].
    NeedAnswer(Offer),
    /// A room or session event (see [`SigEvent`]).
    Event(SigEvent),
}

/// Why connecting failed. Messages never contain the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The handshake did not finish within `connect_timeout`.
    #[error("connecting to Janus timed out after {0:?}")]
    Timeout(Duration),
    /// TCP, TLS, HTTP or WebSocket handshake failure.
    #[error("cannot connect to Janus: {0}")]
    Failed(String),
    /// The server did not agree to speak `janus-protocol`.
    #[error("the server did not accept the janus-protocol WebSocket subprotocol")]
    Subprotocol,
}

/// The client is gone (its session ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Janus session has ended")]
pub struct ClientClosed;

enum Command {
    Answer { offer_id: u64, sdp: String },
    Leave,
}

/// A running Janus VideoRoom session. Drop it (or call [`JanusClient::leave`]) to leave.
#[derive(Debug)]
pub struct JanusClient {
    cmd: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl JanusClient {
    /// Connects and starts joining `url`'s room as `bot_name`. Returns once the WebSocket is
    /// open; [`SigEvent::Joined`] (or a `Fatal`) follows on the event channel.
    pub async fn connect(
        url: &JanusUrl,
        bot_name: &str,
        opts: &JanusOptions,
    ) -> Result<(JanusClient, mpsc::Receiver<ClientEvent>), ConnectError> {
        let ws = timeout(opts.connect_timeout, open_socket(url, &opts.pinned_addrs))
            .await
            .map_err(|_| ConnectError::Timeout(opts.connect_timeout))??;
        debug!(tls = url.is_tls(), "Janus WebSocket open.");
        let mut cfg = SessionConfig::new(bot_name.to_string(), url.room.clone(), url.pin.clone());
        cfg.keepalive_interval = opts.keepalive_interval;
        cfg.request_timeout = opts.request_timeout;
        cfg.max_publishers = opts.max_publishers;
        let session = JanusSession::new(cfg, now(), rand::random());
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL);
        let task = tokio::spawn(drive(ws, session, cmd_rx, ev_tx, opts.request_timeout));
        Ok((JanusClient { cmd: cmd_tx, task }, ev_rx))
    }

    /// Hands the media transport's answer for `offer_id` to the session. A stale offer id is
    /// ignored (a newer offer is on its way).
    pub async fn answer(&self, offer_id: u64, answer_sdp: String) -> Result<(), ClientClosed> {
        self.cmd
            .send(Command::Answer {
                offer_id,
                sdp: answer_sdp,
            })
            .await
            .map_err(|_| ClientClosed)
    }

    /// Starts leaving: `leave`, `detach`, `destroy`; the event stream ends with
    /// [`SigEvent::Left`] within `request_timeout`.
    pub async fn leave(&self) {
        let _ = self.cmd.send(Command::Leave).await;
    }

    /// Waits until the driver task has finished (after a terminal event).
    pub async fn closed(self) {
        let JanusClient { cmd, task } = self;
        // Keep the command channel open: dropping it would mean "leave".
        let _ = task.await;
        drop(cmd);
    }
}

fn now() -> std::time::Instant {
    TokioInstant::now().into_std()
}

async fn open_socket(url: &JanusUrl, pinned: &[std::net::SocketAddr]) -> Result<Ws, ConnectError> {
    let mut req = url
        .ws_url
        .expose()
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Failed(e.to_string()))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connector = if url.is_tls() {
        tokio_tungstenite::Connector::Rustls(Arc::new(tls_config()?))
    } else {
        tokio_tungstenite::Connector::Plain
    };
    let (ws, resp) = if pinned.is_empty() {
        tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, Some(connector))
            .await
            .map_err(|e| ConnectError::Failed(e.to_string()))?
    } else {
        let mut last = None;
        let mut stream = None;
        for addr in pinned {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(stream) = stream else {
            return Err(ConnectError::Failed(
                last.map(|e| e.to_string())
                    .unwrap_or_else(|| "no address".into()),
            ));
        };
        let _ = stream.set_nodelay(true);
        tokio_tungstenite::client_async_tls_with_config(req, stream, Some(config), Some(connector))
            .await
            .map_err(|e| ConnectError::Failed(e.to_string()))?
    };
    let agreed = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == SUBPROTOCOL));
    if !agreed {
        return Err(ConnectError::Subprotocol);
    }
    Ok(ws)
}

fn tls_config() -> Result<rustls::ClientConfig, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Failed(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The driver: mutate → drain outputs → wait for the next input, until the session closes.
async fn drive(
    mut ws: Ws,
    mut session: JanusSession,
    mut cmd_rx: mpsc::Receiver<Command>,
    ev_tx: mpsc::Sender<ClientEvent>,
    io_timeout: Duration,
) {
    let mut commands_open = true;
    let mut socket_open = true;
    loop {
        while let Some(out) = session.poll_output() {
            match out {
                SigOutput::Transmit(text) => {
                    if !socket_open {
                        continue;
                    }
                    let sent = timeout(io_timeout, ws.send(Message::text(text))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        debug!("Janus WebSocket write failed.");
                        socket_open = false;
                        session.handle_disconnect(now());
                    }
                }
                SigOutput::NeedAnswer(offer) => {
                    if ev_tx.send(ClientEvent::NeedAnswer(offer)).await.is_err() {
                        session.leave(now());
                    }
                }
                SigOutput::Event(ev) => {
                    if ev_tx.send(ClientEvent::Event(ev)).await.is_err() {
                        session.leave(now());
                    }
                }
            }
        }
        if session.is_closed() {
            if socket_open {
                let _ = timeout(io_timeout, ws.close(None)).await;
            }
            debug!("Janus driver finished.");
            return;
        }
        let wake = session.poll_timeout().map(TokioInstant::from_std);
        tokio::select! {
            frame = ws.next(), if socket_open => match frame {
                Some(Ok(Message::Text(text))) => session.handle_message(now(), text.as_str()),
                Some(Ok(Message::Close(_))) | None => {
                    socket_open = false;
                    session.handle_disconnect(now());
                }
                Some(Err(e)) => {
                    debug!(error = %e, "Janus WebSocket read failed.");
                    socket_open = false;
                    session.handle_disconnect(now());
                }
                Some(Ok(_)) => {} // binary, ping (answered by tungstenite), pong
            },
            _ = sleep_until(wake.unwrap_or_else(TokioInstant::now)), if wake.is_some() => {
                session.handle_timeout(now());
            }
            cmd = cmd_rx.recv(), if commands_open => match cmd {
                Some(Command::Answer { offer_id, sdp }) => {
                    if let Err(e) = session.answered(now(), offer_id, sdp) {
                        debug!(error = %e, "Answer not used.");
                    }
                }
                Some(Command::Leave) => session.leave(now()),
                None => {
                    commands_open = false;
                    session.leave(now());
                }
            },
            else => {
                // No socket, no deadline, no commands: nothing can happen any more.
                warn!("Janus driver has nothing left to wait for.");
                session.handle_disconnect(now());
            }
        }
    }
}
