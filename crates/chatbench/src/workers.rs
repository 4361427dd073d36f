//! Idle clients spread over several generator processes. One process holds at most as many
//! connections as it may open files (about 20,000 on the benchmark machine), so the idle
//! scenario's leader starts helpers of its own binary (the hidden `idle-worker` subcommand),
//! tells each how many clients to hold and asks how many are still alive.
//!
//! The protocol is one line per command on a helper's stdin and one answer line on its stdout:
//! `hold N` → `held N` (once N clients are connected), `alive` → `alive K`. A helper closes its
//! clients and ends when its stdin closes, which happens when the leader ends, however it ends;
//! the leader's handles also kill the helpers when dropped.

use std::process::Stdio;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// A command from the leader, as a helper reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Hold this many clients in all (connect more if fewer are held).
    Hold(usize),
    /// Report how many clients are alive.
    Alive,
}

impl Command {
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        match line.trim().split_once(' ') {
            Some(("hold", n)) => Ok(Self::Hold(n.parse().context("hold count")?)),
            None if line.trim() == "alive" => Ok(Self::Alive),
            _ => anyhow::bail!("unknown worker command {line:?}"),
        }
    }
}

/// `total` clients over `procs` processes, as evenly as possible: the first ones take one more.
pub fn shares(total: usize, procs: usize) -> Vec<usize> {
    let procs = procs.max(1);
    (0..procs).map(|i| total / procs + usize::from(i < total % procs)).collect()
}

struct Worker {
    /// Kept so the helper is killed when the leader drops it (`kill_on_drop`).
    _child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    /// The answer to the last command: `<word> <count>`.
    async fn answer(&mut self, word: &str) -> anyhow::Result<usize> {
        let line = self.answers.next_line().await?.context("an idle worker ended (see its stderr)")?;
        match line.split_once(' ') {
            Some((w, n)) if w == word => Ok(n.parse()?),
            _ => anyhow::bail!("unexpected answer from an idle worker: {line:?}"),
        }
    }
}

/// The helpers of one idle run.
pub struct Workers {
    procs: Vec<Worker>,
}

impl Workers {
    /// Starts `n` helpers: this binary with `args` (the global options) and `idle-worker
    /// --index i` for i in 1..=n.
    pub fn start(n: usize, args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let procs = (1..=n)
            .map(|i| {
                let mut child = tokio::process::Command::new(&exe)
                    .args(args)
                    .args(["idle-worker", "--index", &i.to_string()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()?;
                let stdin = child.stdin.take().context("worker stdin")?;
                let answers = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
                Ok(Worker { _child: child, stdin, answers })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { procs })
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Tells helper i to hold `counts[i]` clients (returns at once: see [`Workers::held`]).
    pub async fn hold(&mut self, counts: &[usize]) -> anyhow::Result<()> {
        for (w, n) in self.procs.iter_mut().zip(counts) {
            w.send(&format!("hold {n}")).await?;
        }
        Ok(())
    }

    /// Waits until every helper holds what it was told to; the total held.
    pub async fn held(&mut self) -> anyhow::Result<usize> {
        let mut total = 0;
        for w in &mut self.procs {
            total += w.answer("held").await?;
        }
        Ok(total)
    }

    /// Clients alive across the helpers.
    pub async fn alive(&mut self) -> anyhow::Result<usize> {
        let mut total = 0;
        for w in &mut self.procs {
            w.send("alive").await?;
            total += w.answer("alive").await?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        assert_eq!(shares(50_000, 4), [12_500; 4]);
        assert_eq!(shares(10, 3), [4, 3, 3]);
        assert_eq!(shares(2, 3), [1, 1, 0]);
        assert_eq!(shares(7, 0), [7]);
    }

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse("hold 12500\n").unwrap(), Command::Hold(12_500));
        assert_eq!(Command::parse("alive").unwrap(), Command::Alive);
        assert!(Command::parse("hold many").is_err());
        assert!(Command::parse("quit").is_err());
    }
}
