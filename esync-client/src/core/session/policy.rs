//! Download and install policy: rules evaluated on the Client before it
//! asks anything, then consent through an HMI listener on the broker
//! (esync-proto's `ConsentRequest`/`ConsentResponse`), with postponement.
//!
//! Per-domain strictness: a component may carry a stricter rule of its own
//! (its package precondition, and a Client-configured [`DomainRule`] per
//! device); it is evaluated here, and the Agent evaluates its own again.

use std::collections::BTreeMap;

use esync_package::package::{Component, DownloadPolicy, NetworkKind, TimeWindow};
use esync_proto::id::CorrelationId;
use esync_proto::id::DevicePath;
use esync_proto::message::{ConsentKind, ConsentRequest, ConsentResponse, Decision, Signal};
use esync_proto::precondition::Precondition;

/// What the host reports about the vehicle now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// Current network kind, if connected.
    pub network: Option<NetworkKind>,
    /// Battery state of charge in percent, if known.
    pub battery_percent: Option<u8>,
    /// Vehicle-state signals (for preconditions).
    pub signals: Vec<Signal>,
}

/// A stricter rule for one domain (device), e.g. brakes or steering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainRule {
    /// Battery minimum for this component.
    pub min_battery_percent: Option<u8>,
    /// Vehicle state that must hold.
    pub precondition: Option<Precondition>,
    /// Always ask the user, whatever the package says.
    pub consent_required: bool,
}

/// Rules of one kind (download or install).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Windows in which the step may run (UTC minute of day); empty: any.
    pub windows: Vec<TimeWindow>,
    /// Allowed networks; empty: any.
    pub networks: Vec<NetworkKind>,
    /// Battery minimum.
    pub min_battery_percent: Option<u8>,
    /// Vehicle state that must hold.
    pub precondition: Option<Precondition>,
    /// Ask the user even when no component requires it.
    pub consent_required: bool,
}

/// The Client's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Download rules.
    pub download: Rules,
    /// Install rules.
    pub install: Rules,
    /// Stricter per-device rules (both steps).
    pub domains: BTreeMap<DevicePath, DomainRule>,
    /// How long a consent request stays open (ms); lapsed counts as postponed.
    pub consent_timeout_ms: u64,
    /// Postponement when a lapsed request was not answered (ms).
    pub default_postpone_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            download: Rules::default(),
            install: Rules::default(),
            domains: BTreeMap::new(),
            consent_timeout_ms: 10 * 60_000,
            default_postpone_ms: 60 * 60_000,
        }
    }
}

/// Why a step may not run now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blocked {
    /// Outside every allowed window.
    OutsideWindow,
    /// Network not allowed (or none).
    Network(Option<NetworkKind>),
    /// Battery below the minimum (or unknown), for `device` when a domain rule.
    Battery {
        /// Required minimum.
        min: u8,
        /// Reported value.
        have: Option<u8>,
        /// The component whose rule it is, if any.
        device: Option<DevicePath>,
    },
    /// A precondition does not hold.
    Precondition {
        /// Its canonical text.
        expr: String,
        /// The component whose rule it is, if any.
        device: Option<DevicePath>,
    },
}

/// The verdict of the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleVerdict {
    /// May run without asking.
    Allowed,
    /// May run once the user consents.
    NeedsConsent,
    /// May not run now.
    Blocked(Vec<Blocked>),
}

fn minute_of_day(wall_ms: u64) -> u16 {
    ((wall_ms / 60_000) % 1440) as u16
}

fn check_pre(
    p: &Precondition,
    c: &Conditions,
    device: Option<&DevicePath>,
    out: &mut Vec<Blocked>,
) {
    if p.eval(&c.signals) != Ok(true) {
        out.push(Blocked::Precondition {
            expr: p.as_str().to_string(),
            device: device.cloned(),
        });
    }
}

fn check_battery(min: u8, c: &Conditions, device: Option<&DevicePath>, out: &mut Vec<Blocked>) {
    if c.battery_percent.is_none_or(|b| b < min) {
        out.push(Blocked::Battery {
            min,
            have: c.battery_percent,
            device: device.cloned(),
        });
    }
}

impl Policy {
    /// Evaluates the rules of `kind` for a package with `download` policy
    /// (signed in the package) and `components`, at wall time `wall_ms`.
    pub fn evaluate(
        &self,
        kind: ConsentKind,
        package: &DownloadPolicy,
        components: &[&Component],
        c: &Conditions,
        wall_ms: u64,
    ) -> RuleVerdict {
        let rules = match kind {
            ConsentKind::Download => &self.download,
            ConsentKind::Install => &self.install,
        };
        let mut out = Vec::new();
        let minute = minute_of_day(wall_ms);
        let windows = &rules.windows;
        let package_window = matches!(kind, ConsentKind::Download)
            .then_some(package.window)
            .flatten();
        if (!windows.is_empty() && !windows.iter().any(|w| w.contains(minute)))
            || package_window.is_some_and(|w| !w.contains(minute))
        {
            out.push(Blocked::OutsideWindow);
        }
        let net_ok =
            |list: &[NetworkKind]| list.is_empty() || c.network.is_some_and(|n| list.contains(&n));
        let package_nets: &[NetworkKind] = match kind {
            ConsentKind::Download => &package.networks,
            ConsentKind::Install => &[],
        };
        if !net_ok(&rules.networks) || !net_ok(package_nets) {
            out.push(Blocked::Network(c.network));
        }
        if let Some(min) = rules.min_battery_percent {
            check_battery(min, c, None, &mut out);
        }
        if let Some(p) = &rules.precondition {
            check_pre(p, c, None, &mut out);
        }
        let mut consent = rules.consent_required;
        for comp in components {
            let dev = Some(&comp.device);
            consent |= comp.policy.consent_required;
            if matches!(kind, ConsentKind::Install) {
                if let Some(p) = &comp.policy.precondition {
                    check_pre(p, c, dev, &mut out);
                }
            }
            if let Some(d) = self.domains.get(&comp.device) {
                consent |= d.consent_required;
                if let Some(min) = d.min_battery_percent {
                    check_battery(min, c, dev, &mut out);
                }
                if let Some(p) = &d.precondition {
                    check_pre(p, c, dev, &mut out);
                }
            }
        }
        if !out.is_empty() {
            RuleVerdict::Blocked(out)
        } else if consent {
            RuleVerdict::NeedsConsent
        } else {
            RuleVerdict::Allowed
        }
    }
}

/// What a consent answer means for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentOutcome {
    /// Go ahead.
    Granted,
    /// Refused, with the user's reason.
    Denied(String),
    /// Ask again at this wall time (ms since the epoch).
    PostponedUntil(u64),
}

impl ConsentOutcome {
    /// From the listener's decision; a postponement in the past or further
    /// than `max_postpone_ms` from `wall_ms` is clamped.
    pub fn from_decision(d: &Decision, wall_ms: u64, max_postpone_ms: u64) -> Self {
        match d {
            Decision::Consent => ConsentOutcome::Granted,
            Decision::Deny { reason } => ConsentOutcome::Denied(reason.clone()),
            Decision::Postpone { until_ms } => ConsentOutcome::PostponedUntil(
                (*until_ms).clamp(wall_ms, wall_ms.saturating_add(max_postpone_ms)),
            ),
        }
    }
}

/// What the [`InstallGate`] says.
#[derive(Debug, Clone, PartialEq)]
pub enum GateStep {
    /// Install now.
    Go,
    /// Send this request to the HMI listener and hand its answer to
    /// [`InstallGate::answer`].
    Ask(ConsentRequest),
    /// Waiting for an answer or a postponement: poll again at this wall
    /// time (ms since the epoch), or earlier when an answer arrives.
    WaitUntilWall(u64),
    /// The install rules do not hold now: poll again when the vehicle's
    /// conditions change.
    Blocked(Vec<Blocked>),
    /// The user refused the install.
    Denied(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Gate {
    Evaluate,
    Asked {
        request_id: CorrelationId,
        deadline_wall_ms: u64,
    },
    Postponed {
        until_wall_ms: u64,
    },
    Open,
    Denied(String),
}

/// The install step's policy for one verified, downloaded package,
/// sans-I/O: the install [`Rules`] (windows, networks, battery, vehicle
/// state, stricter per-domain rules) and then, when they or a component
/// ask for it, consent through the HMI listener (request/answer; a lapsed
/// request or an answer "postpone" waits until the postponement ends and
/// asks again). The host sends [`GateStep::Ask`] requests and hands the
/// answers back; time is wall time, as in the consent messages.
#[derive(Debug, Clone)]
pub struct InstallGate {
    policy: Policy,
    download: DownloadPolicy,
    components: Vec<Component>,
    title: String,
    id_seed: [u8; 7],
    asked: u64,
    state: Gate,
}

impl InstallGate {
    /// The gate of `package` under `policy`; `id_seed` makes the request
    /// ids of this gate distinct from any other's (e.g. bytes of the
    /// package's hash and the wall time).
    pub fn new(
        policy: &Policy,
        package: &esync_package::package::Package,
        id_seed: [u8; 7],
    ) -> Self {
        InstallGate {
            policy: policy.clone(),
            download: package.download().clone(),
            components: package.components().to_vec(),
            title: format!("Install {}", package.id()),
            id_seed,
            asked: 0,
            state: Gate::Evaluate,
        }
    }

    /// Consent requests sent so far.
    pub fn requests(&self) -> u64 {
        self.asked
    }

    /// What to do at `wall_ms` with the vehicle in `conditions`.
    pub fn poll(&mut self, conditions: &Conditions, wall_ms: u64) -> GateStep {
        match self.state.clone() {
            Gate::Open => GateStep::Go,
            Gate::Denied(why) => GateStep::Denied(why),
            Gate::Asked {
                deadline_wall_ms, ..
            } => {
                if wall_ms < deadline_wall_ms {
                    return GateStep::WaitUntilWall(deadline_wall_ms);
                }
                // Lapsed: counts as postponed.
                let until_wall_ms = wall_ms.saturating_add(self.policy.default_postpone_ms);
                self.state = Gate::Postponed { until_wall_ms };
                GateStep::WaitUntilWall(until_wall_ms)
            }
            Gate::Postponed { until_wall_ms } if wall_ms < until_wall_ms => {
                GateStep::WaitUntilWall(until_wall_ms)
            }
            Gate::Postponed { .. } | Gate::Evaluate => self.evaluate(conditions, wall_ms),
        }
    }

    fn evaluate(&mut self, conditions: &Conditions, wall_ms: u64) -> GateStep {
        let comps: Vec<&Component> = self.components.iter().collect();
        match self.policy.evaluate(
            ConsentKind::Install,
            &self.download,
            &comps,
            conditions,
            wall_ms,
        ) {
            RuleVerdict::Allowed => {
                self.state = Gate::Open;
                GateStep::Go
            }
            RuleVerdict::Blocked(why) => {
                self.state = Gate::Evaluate;
                GateStep::Blocked(why)
            }
            RuleVerdict::NeedsConsent => {
                self.asked += 1;
                let mut id = [0u8; 16];
                id[0] = 0x1c;
                id[1..8].copy_from_slice(&self.id_seed);
                id[8..].copy_from_slice(&self.asked.to_be_bytes());
                let request_id = esync_proto::id::Id128(id);
                let deadline_wall_ms = wall_ms.saturating_add(self.policy.consent_timeout_ms);
                let stages: std::collections::BTreeSet<u16> =
                    self.components.iter().map(|c| c.stage).collect();
                self.state = Gate::Asked {
                    request_id,
                    deadline_wall_ms,
                };
                GateStep::Ask(ConsentRequest {
                    request_id,
                    kind: ConsentKind::Install,
                    title: self.title.clone(),
                    description: format!(
                        "{} component(s) in {} stage(s); the vehicle is unavailable while they install",
                        self.components.len(),
                        stages.len()
                    ),
                    size_bytes: 0,
                    estimated_duration_s: 0,
                    deadline_ms: deadline_wall_ms,
                })
            }
        }
    }

    /// The listener's answer. `None`: it answers no open request of this
    /// gate (ignored).
    pub fn answer(&mut self, response: &ConsentResponse, wall_ms: u64) -> Option<GateStep> {
        let Gate::Asked { request_id, .. } = &self.state else {
            return None;
        };
        if response.request_id != *request_id {
            return None;
        }
        let max = self.policy.default_postpone_ms.saturating_mul(24);
        Some(
            match ConsentOutcome::from_decision(&response.decision, wall_ms, max) {
                ConsentOutcome::Granted => {
                    self.state = Gate::Open;
                    GateStep::Go
                }
                ConsentOutcome::Denied(why) => {
                    self.state = Gate::Denied(why.clone());
                    GateStep::Denied(why)
                }
                ConsentOutcome::PostponedUntil(until_wall_ms) => {
                    self.state = Gate::Postponed { until_wall_ms };
                    GateStep::WaitUntilWall(until_wall_ms)
                }
            },
        )
    }
}
