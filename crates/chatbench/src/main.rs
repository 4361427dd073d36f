//! `chatbench`: the load generator (the scenarios are in this crate's library). Prints one JSON line per
//! result on stdout; progress on stderr.

use chatbench::{Bench, BenchArgs};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clusterchat::logging::init_to("warn", std::io::stderr);
    let bench = Bench::new(BenchArgs::parse())?;
    for line in bench.run().await? {
        println!("{line}");
    }
    Ok(())
}
