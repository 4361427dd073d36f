//! Log output: every line carries the node id of the `node` span it was logged in, as
//! `[node1]`, so the logs of several nodes (or several nodes in one test process) stay apart.

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
struct NodeFormat;

impl<S, N> FormatEvent<S, N> for NodeFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        let meta = event.metadata();
        write!(writer, " {:>5} ", meta.level())?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root().filter(|s| s.name() == "node") {
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    write!(writer, "[{}] ", fields.fields.trim_start_matches("id="))?;
                }
            }
        }
        write!(writer, "{}: ", meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the global subscriber, writing to stdout; `RUST_LOG` overrides `default_filter`.
pub fn init(default_filter: &str) {
    init_to(default_filter, std::io::stdout);
}

/// Installs the global subscriber writing to `writer`: stderr for a command whose stdout is
/// its output (`inspect`).
pub fn init_to<W>(default_filter: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A second init (tests starting several nodes) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .event_format(NodeFormat)
        .try_init();
}
