//! The `ddpm` subcommands.

pub mod bench;
pub mod demo;
pub mod device;
pub mod grads;
pub mod kernels;
pub mod sample;
pub mod train;

/// The command-line name of an option's value (`SchedulerName::Ddim` -> "ddim").
pub fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value().map_or_else(String::new, |p| p.get_name().to_string())
}
