//! PBFT unit tests: single steps with exact actions. Runs of whole
//! networks under faults are the simulator's (`crate::sim::scenarios::pbft`).
