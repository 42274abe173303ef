//! Training: schedules, the training step, and (later) the loop, datasets and checkpoints.

pub mod schedule;
pub mod step;
