//! Bounded retries around any [`SttProvider`].

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::{SttError, SttProvider, SttSegment};

/// How [`transcribe_with_retry`] retries a transient failure.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (0 is treated as 1). Default 4.
    pub attempts: u32,
    /// Limit on each attempt; an attempt that takes longer counts as a
    /// transient failure. Default 120 s.
    pub attempt_timeout: Duration,
    /// Wait before the second attempt; doubles after each failure. Default 500 ms.
    pub initial_backoff: Duration,
    /// Cap on the wait between attempts. Default 10 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            attempt_timeout: Duration::from_secs(120),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `failed` (1-based): exponential
    /// backoff capped at `max_backoff`, with "equal jitter" (a random point in
    /// the upper half) so a fleet of bots does not retry in lockstep.
    pub fn backoff(&self, failed: u32) -> Duration {
        let exp = failed.saturating_sub(1).min(30);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let half = base / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }
}

/// Transcribes with `provider`, retrying [`SttError::Transient`] failures and
/// attempt timeouts up to `policy.attempts` times; [`SttError::Permanent`]
/// failures return at once. The last error names how many attempts were made.
///
/// The orchestrator does not drop an utterance whose attempts all failed
/// transiently: it requeues it in the [`crate::core::backlog::Backlog`], which
/// holds off and tries again until the lifecycle's deadlines end the wait.
pub async fn transcribe_with_retry(
    provider: &dyn SttProvider,
    samples: Arc<[f32]>,
    policy: &RetryPolicy,
) -> Result<Vec<SttSegment>, SttError> {
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        let result = match tokio::time::timeout(
            policy.attempt_timeout,
            provider.transcribe(samples.clone()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(SttError::Transient(format!(
                "{} STT did not finish within {:?}",
                provider.name(),
                policy.attempt_timeout
            ))),
        };
        match result {
            Ok(segments) => return Ok(segments),
            Err(SttError::Permanent(msg)) => return Err(SttError::Permanent(msg)),
            Err(SttError::Transient(msg)) if attempt >= attempts => {
                return Err(SttError::Transient(format!(
                    "{msg} (gave up after {attempts} attempt{})",
                    if attempts == 1 { "" } else { "s" }
                )))
            }
            Err(SttError::Transient(msg)) => {
                let wait = policy.backoff(attempt);
                tracing::warn!(
                    provider = provider.name(),
                    attempt,
                    error = %msg,
                    ?wait,
                    "Transcription failed; retrying."
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    /// One scripted answer; `None` means "hang".
    type Outcome = Option<Result<Vec<SttSegment>, SttError>>;

    /// Plays back scripted outcomes.
    struct Scripted {
        outcomes: Mutex<Vec<Outcome>>,
        calls: AtomicU32,
    }

    impl Scripted {
        fn new(mut outcomes: Vec<Outcome>) -> Self {
            outcomes.reverse();
            Scripted {
                outcomes: Mutex::new(outcomes),
                calls: AtomicU32::new(0),
            }
        }
    }

    #[async_trait]
    impl SttProvider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn model(&self) -> &str {
            "none"
        }
        async fn transcribe(&self, _: Arc<[f32]>) -> Result<Vec<SttSegment>, SttError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self.outcomes.lock().expect("test mutex").pop();
            match next {
                Some(Some(r)) => r,
                Some(None) => std::future::pending().await,
                None => Err(SttError::Permanent("script exhausted".into())),
            }
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            attempt_timeout: Duration::from_millis(200),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
        }
    }

    fn ok() -> Result<Vec<SttSegment>, SttError> {
        Ok(vec![SttSegment {
            start_ms: 0,
            end_ms: 10,
            text: "hi".into(),
        }])
    }

    fn samples() -> Arc<[f32]> {
        Arc::from(vec![0.0f32; 16])
    }

    #[tokio::test]
    async fn retries_transient_errors_and_timeouts_then_succeeds() {
        let p = Scripted::new(vec![
            Some(Err(SttError::Transient("503".into()))),
            None,
            Some(ok()),
        ]);
        let out = transcribe_with_retry(&p, samples(), &fast()).await.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(p.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let p = Scripted::new(vec![
            Some(Err(SttError::Permanent("400 bad".into()))),
            Some(ok()),
        ]);
        let err = transcribe_with_retry(&p, samples(), &fast())
            .await
            .unwrap_err();
        assert!(
            matches!(err, SttError::Permanent(ref m) if m == "400 bad"),
            "{err}"
        );
        assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempt_budget() {
        let p = Scripted::new(vec![None, None, None, Some(ok())]);
        let started = std::time::Instant::now();
        let err = transcribe_with_retry(&p, samples(), &fast())
            .await
            .unwrap_err();
        assert_eq!(p.calls.load(Ordering::SeqCst), 3);
        let msg = err.to_string();
        assert!(
            msg.contains("did not finish within") && msg.contains("after 3 attempts"),
            "{msg}"
        );
        // 3 × 200 ms timeouts + at most 5 + 10 ms backoff, with slack for a busy machine.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b50 = p.backoff(50);
            assert!(b50 >= Duration::from_millis(500) && b50 <= Duration::from_millis(1000));
        }
    }
}
