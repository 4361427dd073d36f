//! Log output: every line carries the node id of the `node` span it was logged in, as
//! `[node1]`, so the logs of several nodes (or several nodes in one test process) stay apart.
//! A task spawned without that span logs outside it: in a process that runs one node (the
//! `node` command, see [`init_node`]) its lines carry that node's id all the same.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The span every task of a node runs in; its `id` field is the node id.
pub fn node_span(node_id: &str) -> tracing::Span {
    tracing::info_span!("node", id = %node_id)
}

/// `2026-11-24T17:00:00.000000Z DEBUG [node1] clusterchat::engineio::engine: message key=value`
struct NodeFormat {
    /// The node of a process that runs only one: named on lines logged outside a `node` span.
    process_node: Option<String>,
}

impl<S, N> FormatEvent<S, N> for NodeFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        let meta = event.metadata();
        write!(writer, " {:>5} ", meta.level())?;
        let mut named = false;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root().filter(|s| s.name() == "node") {
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    write!(writer, "[{}] ", fields.fields.trim_start_matches("id="))?;
                    named = true;
                }
            }
        }
        if let (false, Some(node)) = (named, &self.process_node) {
            write!(writer, "[{node}] ")?;
        }
        write!(writer, "{}: ", meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the global subscriber, writing to stdout; `RUST_LOG` overrides `default_filter`.
pub fn init(default_filter: &str) {
    init_with(default_filter, std::io::stdout, None);
}

/// As [`init`], for a process that runs the one node `node_id`: every line names it.
pub fn init_node(default_filter: &str, node_id: &str) {
    init_with(default_filter, std::io::stdout, Some(node_id.to_owned()));
}

/// Installs the global subscriber writing to `writer`: stderr for a command whose stdout is
/// its output (`inspect`).
pub fn init_to<W>(default_filter: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    init_with(default_filter, writer, None);
}

fn init_with<W>(default_filter: &str, writer: W, process_node: Option<String>)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A second init (tests starting several nodes) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .event_format(NodeFormat { process_node })
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The lines a subscriber with `NodeFormat { process_node }` writes for one event logged
    /// in a `node` span and one logged outside any.
    fn lines(process_node: Option<&str>) -> Vec<String> {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Writer(sink.clone()))
            .with_ansi(false)
            .event_format(NodeFormat { process_node: process_node.map(str::to_owned) })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            node_span("node2").in_scope(|| tracing::info!("inside"));
            tracing::info!("outside");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| l.split_once(" INFO ").unwrap().1.to_owned()).collect()
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_names_the_node_of_its_span_else_of_the_process() {
        let target = module_path!();
        assert_eq!(lines(None), [format!("[node2] {target}: inside"), format!("{target}: outside")]);
        assert_eq!(
            lines(Some("node1")),
            [format!("[node2] {target}: inside"), format!("[node1] {target}: outside")],
            "the span's node wins; the process's names the rest"
        );
    }
}
