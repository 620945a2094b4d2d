//! Retries with exponential backoff and jitter for calls that fail transiently (network errors,
//! 5xx, 429, an upload still running on the coordinator).

use std::{future::Future, time::Duration};

use rand::Rng;

use crate::client::ClientError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay between attempts.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 8,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (0-based): initial · 2^retry, capped, with ±25% jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.initial.as_secs_f64() * 2f64.powi(retry.min(30) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = rand::rng().random_range(0.75..=1.25);
        Duration::from_secs_f64(capped * jitter)
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts run out.
    pub async fn run<T, F, Fut>(&self, what: &str, call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        self.run_resyncing(what, |_| false, call, || async { Ok(None) })
            .await
    }

    /// As [`Backoff::run`], but also retries the errors `also` accepts, and calls `resync` before
    /// each retry (after the delay) to learn where the other side stands: it may end the run with a
    /// value (the work got done meanwhile) or an error, or return `None` to retry.
    pub async fn run_resyncing<T, E, F, Fut, R, RFut>(
        &self,
        what: &str,
        also: impl Fn(&ClientError) -> bool,
        mut call: F,
        mut resync: R,
    ) -> Result<T, E>
    where
        E: From<ClientError>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
        R: FnMut() -> RFut,
        RFut: Future<Output = Result<Option<T>, E>>,
    {
        let mut retry = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if (e.retryable() || also(&e)) && retry + 1 < self.attempts => {
                    let delay = self.delay(retry);
                    tracing::warn!(error = %e, "{what} failed; retrying in {:.1} s", delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                    retry += 1;
                    if let Some(done) = resync().await? {
                        return Ok(done);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use coldfuse_shared::api::ErrorCode;

    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let b = Backoff {
            attempts: 5,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let d0 = b.delay(0).as_secs_f64();
        assert!((0.075..=0.125).contains(&d0), "{d0}");
        let d3 = b.delay(3).as_secs_f64();
        assert!((0.6..=1.0).contains(&d3), "{d3}");
        let d9 = b.delay(9).as_secs_f64();
        assert!((0.75..=1.25).contains(&d9), "{d9}");
    }

    #[tokio::test]
    async fn retries_transient_errors_only() {
        let b = Backoff {
            attempts: 4,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let mut calls = 0;
        let out = b
            .run("test", || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(ClientError::api(503, ErrorCode::Unknown, "try later"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 3);
        let mut calls = 0;
        let err = b
            .run("test", || {
                calls += 1;
                async { Err::<(), _>(ClientError::api(409, ErrorCode::StaleBase, "old")) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert!(err.to_string().contains("stale_base"));
        let mut calls = 0;
        b.run("test", || {
            calls += 1;
            async { Err::<(), _>(ClientError::api(500, ErrorCode::Internal, "boom")) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 4);
    }
}
