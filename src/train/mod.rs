//! Training: schedules, the training step, and (later) the loop, datasets and checkpoints.

pub mod checkpoint;
pub mod graph;
pub mod row;
pub mod run;
pub mod schedule;
pub mod step;
pub mod stepper;
