//! Running provisioned vehicles against Servers: [`Fleet::spawn`] starts one
//! tokio task per vehicle; [`FleetHandle::snapshot`] reads the live
//! counters; [`FleetHandle::stop`] stops every vehicle (between steps) and
//! returns the [`FleetReport`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use esync_api::MetadataFileName;
use esync_client::http::{DeviceHttp, HttpError, Repo};
use esync_identity::TrustAnchors;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinSet;

use crate::provision::SimVehicle;
use crate::stats::{Counters, FleetSnapshot, Mark, Window};
use crate::vehicle::{SimTask, VehicleReport};
use crate::SimError;

/// How a fleet runs.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Device API URLs (`https://host:port`). Vehicle `i` uses
    /// `servers[i % n]` first and, on a connection error or timeout, the
    /// next ones in order (failover); with one URL every vehicle uses it.
    pub servers: Vec<String>,
    /// The fleet CA certificate (PEM): the Server's certificate must chain
    /// to it (the vehicles' certificates do).
    pub ca_pem: String,
    /// Time between a vehicle's check-ins.
    pub interval: Duration,
    /// Each wait is `interval` ± up to this (uniform).
    pub jitter: Duration,
    /// The first check-ins are spread uniformly over this (at least one
    /// interval): each vehicle's first check-in uploads its manifest, far
    /// more work for the Server than a check-in that changes nothing.
    pub ramp_up: Duration,
    /// Share of offers (0.0..=1.0) a vehicle fails and rolls back
    /// (deterministic per seed, VIN and package).
    pub failure_rate: f64,
    /// Seed of the failure decisions and the timing jitter.
    pub seed: u64,
    /// Timeout of one request (and of each blob chunk).
    pub request_timeout: Duration,
    /// First retry delay after a retryable error (doubles each time).
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts of one request before the step is given up until the next
    /// check-in.
    pub max_attempts: u32,
    /// Print each error on stderr.
    pub log_errors: bool,
}

impl FleetConfig {
    /// A configuration for `servers` and the CA `ca_pem`: 30 s interval
    /// ± 3 s, first check-ins over one interval, no failures, seed 0, 30 s request timeout, backoff 200 ms to
    /// 10 s, 8 attempts.
    pub fn new(servers: Vec<String>, ca_pem: String) -> Self {
        Self {
            servers,
            ca_pem,
            interval: Duration::from_secs(30),
            jitter: Duration::from_secs(3),
            ramp_up: Duration::ZERO,
            failure_rate: 0.0,
            seed: 0,
            request_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_attempts: 8,
            log_errors: false,
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::Config(m.to_owned()));
        if self.servers.is_empty() {
            return bad("no server URL");
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return bad("failure rate must be within 0..=1");
        }
        if self.interval.is_zero() {
            return bad("interval must be positive");
        }
        if self.jitter > self.interval {
            return bad("jitter must not exceed the interval");
        }
        if self.max_attempts == 0 {
            return bad("max attempts must be at least 1");
        }
        Ok(())
    }
}

/// The Director's and the Image repository's first roots, fetched once
/// through the device API by the first vehicle that verifies (a real
/// vehicle has them from the factory; the simulator trusts them on first
/// use).
#[derive(Debug, Default)]
pub(crate) struct Roots(OnceCell<(Vec<u8>, Vec<u8>)>);

impl Roots {
    pub(crate) async fn get(
        &self,
        http: &DeviceHttp,
        timeout: Duration,
    ) -> Result<&(Vec<u8>, Vec<u8>), HttpError> {
        self.0
            .get_or_try_init(|| async {
                let name =
                    MetadataFileName::new("1.root.json").map_err(|e| HttpError::Malformed {
                        what: "root name",
                        reason: e.to_string(),
                    })?;
                let missing = |what: &'static str| HttpError::Malformed {
                    what,
                    reason: "no 1.root.json".into(),
                };
                let d = http
                    .metadata_file(Repo::Director, &name, 1 << 20, timeout)
                    .await?
                    .ok_or_else(|| missing("Director root"))?;
                let i = http
                    .metadata_file(Repo::Image, &name, 1 << 20, timeout)
                    .await?
                    .ok_or_else(|| missing("Image root"))?;
                Ok((d, i))
            })
            .await
    }
}

/// Spawns fleets.
#[derive(Debug)]
pub struct Fleet;

impl Fleet {
    /// Starts one task per vehicle of `vehicles` with `config` (on the
    /// current tokio runtime).
    pub fn spawn(config: FleetConfig, vehicles: &[SimVehicle]) -> Result<FleetHandle, SimError> {
        config.validate()?;
        let anchors = TrustAnchors::from_pem(&config.ca_pem)
            .map_err(|e| SimError::Config(format!("CA: {e}")))?;
        let cfg = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let roots = Arc::new(Roots::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for (i, v) in vehicles.iter().enumerate() {
            let task = SimTask::new(
                v,
                i,
                Arc::clone(&cfg),
                Arc::clone(&counters),
                stop_rx.clone(),
                &anchors,
                Arc::clone(&roots),
            )?;
            tasks.spawn(task.run());
        }
        Ok(FleetHandle {
            counters,
            stop: stop_tx,
            tasks,
            started: Instant::now(),
            vehicles: vehicles.len(),
        })
    }
}

/// A running fleet.
#[derive(Debug)]
pub struct FleetHandle {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<VehicleReport>,
    started: Instant,
    vehicles: usize,
}

/// What a fleet did ([`FleetHandle::stop`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// The counters at the end.
    pub totals: FleetSnapshot,
    /// Every vehicle, by VIN order.
    pub vehicles: Vec<VehicleReport>,
}

impl FleetReport {
    /// The summary lines the CLI prints.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let errors: Vec<String> = t
            .errors
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        let offers: Vec<String> = t.offers.iter().map(|(p, n)| format!("{p} {n}")).collect();
        format!(
            "vehicles {}  duration {:.1} s\n\
             check-ins {} ({:.1}/s; up to date {}, new metadata {}, manifest wanted {})\n\
             latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n\
             errors {} ({:.4} % of requests){}{}\n\
             offers {}  installed {}  rolled back {}  manifests {}  reports {}  downloaded {} bytes  failovers {}",
            self.vehicles.len(),
            t.elapsed_s,
            t.check_ins,
            t.check_ins_per_s(),
            t.up_to_date,
            t.new_metadata,
            t.manifest_wanted,
            t.latency_p50_ms,
            t.latency_p99_ms,
            t.latency_max_ms,
            t.errors_total,
            t.error_rate() * 100.0,
            if errors.is_empty() { "" } else { ": " },
            errors.join(", "),
            if offers.is_empty() {
                "0".to_owned()
            } else {
                offers.join(", ")
            },
            t.installed,
            t.rolled_back,
            t.manifests_uploaded,
            t.reports,
            t.bytes_downloaded,
            t.failovers,
        )
    }
}

impl FleetHandle {
    /// The live counters.
    pub fn snapshot(&self) -> FleetSnapshot {
        self.counters
            .snapshot(self.started.elapsed(), self.tasks.len().min(self.vehicles))
    }

    /// The counters now, to measure a window from ([`FleetHandle::since`]).
    pub fn mark(&self) -> Mark {
        self.counters.mark()
    }

    /// Check-ins, latency and errors since `mark` (a steady state after a
    /// warm-up, say).
    pub fn since(&self, mark: &Mark) -> Window {
        self.counters.since(mark)
    }

    /// Stops every vehicle (each finishes the request it is in; an update
    /// in flight is left unfinished) and returns the report.
    pub async fn stop(mut self) -> FleetReport {
        let _ = self.stop.send(true);
        let mut vehicles = Vec::with_capacity(self.vehicles);
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(v) = r {
                vehicles.push(v);
            }
        }
        vehicles.sort_by(|a, b| a.vin.cmp(&b.vin));
        FleetReport {
            totals: self.counters.snapshot(self.started.elapsed(), 0),
            vehicles,
        }
    }
}
