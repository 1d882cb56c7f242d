//! Per-department admission: a sustained rate with a burst (GCRA, from the
//! `governor` crate) and a cap on requests in progress, both from the
//! configuration. Refusals are `429 overloaded` with `Retry-After`, cheap
//! and immediate, so one department's flood cannot starve the others.
//! Also the department's batch job limits (size of a job, jobs unfinished
//! at once), which the job use case enforces.

use crate::config::DepartmentConfig;
use basedata_query::jobs::queue::JobLimits;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Default)]
pub struct Limits {
    rate: Option<DefaultDirectRateLimiter>,
    concurrency: Option<Arc<Semaphore>>,
    /// `max_job_mb`, in bytes; None: the server's body limit.
    job_bytes: Option<u64>,
    job_lines: Option<u64>,
    jobs: Option<u32>,
}

/// Why a request was not admitted, and when to come back.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_secs: u64,
    pub reason: &'static str,
}

impl Limits {
    pub fn from_config(c: &DepartmentConfig) -> Limits {
        let rate = c.rate_limit.and_then(NonZeroU32::new).map(|r| {
            let burst = c.burst.and_then(NonZeroU32::new).unwrap_or(r);
            RateLimiter::direct(Quota::per_second(r).allow_burst(burst))
        });
        let concurrency = c.max_concurrent.map(|n| Arc::new(Semaphore::new(n as usize)));
        Limits {
            rate,
            concurrency,
            job_bytes: c.max_job_mb.map(|mb| mb.saturating_mul(1 << 20)),
            job_lines: c.max_job_lines,
            jobs: c.max_jobs,
        }
    }

    /// What this department may submit as batch jobs; a job body is
    /// limited to `max_body_bytes` (the server's) unless the department
    /// has a limit of its own.
    pub fn jobs(&self, max_body_bytes: usize) -> JobLimits {
        let d = JobLimits::default();
        JobLimits {
            max_bytes: self.job_bytes.unwrap_or(max_body_bytes as u64),
            max_lines: self.job_lines.unwrap_or(d.max_lines),
            max_jobs: self.jobs.unwrap_or(d.max_jobs),
        }
    }

    /// Admits a request or says why not; the permit is held for the
    /// request's lifetime.
    pub fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, Refused> {
        if let Some(rate) = &self.rate {
            if let Err(not_until) = rate.check() {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                return Err(Refused { retry_after_secs: wait.as_secs().max(1), reason: "rate limit" });
            }
        }
        match &self.concurrency {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Ok(Some(p)),
                Err(_) => Err(Refused { retry_after_secs: 1, reason: "concurrent request limit" }),
            },
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_concurrency() {
        let l = Limits::from_config(&DepartmentConfig { rate_limit: Some(5), burst: Some(3), ..Default::default() });
        let admitted = (0..10).filter(|_| l.admit().is_ok()).count();
        assert_eq!(admitted, 3, "the burst bounds back-to-back requests");
        let c = Limits::from_config(&DepartmentConfig { max_concurrent: Some(2), ..Default::default() });
        let a = c.admit().unwrap();
        let _b = c.admit().unwrap();
        assert_eq!(c.admit().unwrap_err().reason, "concurrent request limit");
        drop(a);
        assert!(c.admit().is_ok());
        assert!(Limits::default().admit().unwrap().is_none());
    }

    #[test]
    fn job_limits_default_to_the_body_limit_and_safe_counts() {
        let d = Limits::from_config(&DepartmentConfig::default()).jobs(3 << 20);
        assert_eq!(d, JobLimits { max_bytes: 3 << 20, ..JobLimits::default() });
        assert_eq!((d.max_lines, d.max_jobs), (1_000_000, 4));
        let c = DepartmentConfig { max_job_mb: Some(2), max_job_lines: Some(10), max_jobs: Some(1), ..Default::default() };
        assert_eq!(Limits::from_config(&c).jobs(3 << 20), JobLimits { max_bytes: 2 << 20, max_lines: 10, max_jobs: 1 });
    }
}
