//! `wasmkube bench ...`: measurements behind docs/benchmarks.md.
#[derive(clap::Subcommand)]
pub enum BenchCommand {}
pub async fn run(what: BenchCommand) -> anyhow::Result<()> { match what {} }
