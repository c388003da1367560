//! Deterministic simulation of a tandem cluster: two simulated hosts each run
//! the real core; the network, DRBD, hypervisors and fence devices are
//! simulated, and the safety invariants of DESIGN.md are checked after every
//! event against the simulated ground truth.

pub mod drbd;
mod invariants;
pub mod lab;
mod lifecycle;
mod ops;
pub mod schedule;
mod world;

pub use invariants::FAILOVER_DEADLINE_MS;
pub use schedule::{DeviceMode, Fault, Scenario};
pub use world::{Stats, World};

/// What one schedule produced.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub violations: Vec<String>,
    pub stats: Stats,
    pub trace: Vec<String>,
}

/// Runs one scenario to its end.
pub fn run(scenario: Scenario, seed: u64, trace: bool) -> Outcome {
    let mut w = World::new(scenario, seed, trace);
    let violations = w.run();
    Outcome {
        seed,
        violations,
        trace: w.trace_lines().to_vec(),
        stats: w.stats,
    }
}

/// Runs the random schedule of `seed`.
pub fn run_seed(seed: u64, trace: bool) -> Outcome {
    run(Scenario::random(seed), seed, trace)
}
