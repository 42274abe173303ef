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

/// Runs `body` as this process's part of a launch (`mpirun -np N ddpm ...`): with several ranks,
/// an error or a panic on any rank ends them all (the others would wait for it in their next
/// collective for ever), each error line naming its rank. One rank runs `body` plainly.
pub fn as_rank(
    comm: std::sync::Arc<dyn crate::dist::Comm>,
    body: impl FnOnce(std::sync::Arc<dyn crate::dist::Comm>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if comm.size() == 1 {
        return body(comm);
    }
    // The hook holds no reference: MPI is finalized when the last one goes, at the end.
    let (rank, weak) = (comm.rank(), std::sync::Arc::downgrade(&comm));
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        if let Some(c) = weak.upgrade() {
            c.abort(101);
        }
    }));
    match body(comm.clone()) {
        Ok(()) => Ok(()),
        Err(e) => {
            eprintln!("error (rank {rank}): {e:#}");
            comm.abort(1)
        }
    }
}
