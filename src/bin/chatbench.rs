//! `chatbench`: the load generator (see `clusterchat::loadgen`). Prints one JSON line per
//! result on stdout; progress on stderr.

use clap::Parser;
use clusterchat::loadgen::{Bench, BenchArgs};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clusterchat::logging::init_to("warn", std::io::stderr);
    let bench = Bench::new(BenchArgs::parse())?;
    for line in bench.run().await? {
        println!("{line}");
    }
    Ok(())
}
