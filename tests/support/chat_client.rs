//! A rust_socketio chat client for tests: connects to `/chat` and hands every event it
//! receives over a channel, so a test awaits exactly the events it expects.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Payload, TransportType};
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A rust_socketio client whose received events arrive on a channel.
pub struct RustClient {
    pub client: Client,
    pub events: mpsc::Receiver<(String, Value)>,
    /// Received, not yet expected.
    pending: VecDeque<(String, Value)>,
}

impl RustClient {
    pub async fn connect(url: &str, user: &str, transport: TransportType) -> Self {
        let (tx, events) = mpsc::channel(16_384);
        let client = ClientBuilder::new(url)
            .namespace("/chat")
            .auth(json!({ "user": user }))
            .transport_type(transport)
            .on_any(move |event, payload, _| {
                let tx = tx.clone();
                async move {
                    if let Payload::Text(mut args) = payload {
                        // The first argument: room broadcasts carry their recovery offset after it.
                        let first = if args.is_empty() { Value::Null } else { args.swap_remove(0) };
                        let _ = tx.send((String::from(event), first)).await;
                    }
                }
                .boxed()
            })
            .connect()
            .await
            .expect("rust_socketio connects");
        Self { client, events, pending: VecDeque::new() }
    }

    /// The next event named `name`. Events of other names stay queued for later calls: the
    /// order between different kinds of events is not promised across nodes (a `room users`
    /// update may overtake the `join room` it follows), the order within one kind is.
    pub async fn expect(&mut self, name: &str) -> Value {
        match self.next_named(name, EVENT_TIMEOUT).await {
            Some(data) => data,
            None => panic!("no {name:?} event within {EVENT_TIMEOUT:?}; queued: {:#?}", self.pending),
        }
    }

    async fn next_named(&mut self, name: &str, limit: Duration) -> Option<Value> {
        if let Some(i) = self.pending.iter().position(|(event, _)| event == name) {
            return self.pending.remove(i).map(|(_, data)| data);
        }
        tokio::time::timeout(limit, async {
            loop {
                let (event, data) = self.events.recv().await.expect("client event stream ended");
                if event == name {
                    return data;
                }
                self.pending.push_back((event, data));
            }
        })
        .await
        .ok()
    }

    /// Waits until a `room users` update shows exactly `users` in `room`; earlier updates on
    /// the way there are consumed.
    pub async fn expect_users(&mut self, room: &str, users: &[&str]) {
        let want = json!({ "room": room, "users": users });
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        let mut seen = Vec::new();
        while let Some(update) = self.next_named("room users", deadline - tokio::time::Instant::now()).await {
            if update == want {
                return;
            }
            seen.push(update);
        }
        panic!("room users never became {want} within {EVENT_TIMEOUT:?}; saw {seen:#?}");
    }

    /// Emits with an ack and returns the server's answer.
    pub async fn call(&self, event: &str, data: Value) -> Value {
        answer(self.send_call(event, data).await).await
    }

    /// Emits with an ack; returns once the event is sent, with where its answer will come.
    pub async fn send_call(&self, event: &str, data: Value) -> mpsc::Receiver<Value> {
        let (tx, rx) = mpsc::channel(1);
        self.client
            .emit_with_ack(event, Payload::Text(vec![data]), EVENT_TIMEOUT, move |payload, _| {
                let tx = tx.clone();
                async move {
                    // rust_socketio 0.6 hands an ack's arguments over as one JSON array.
                    if let Payload::Text(mut args) = payload {
                        let value = match args.pop() {
                            Some(Value::Array(mut inner)) if inner.len() == 1 => inner.pop().unwrap_or(Value::Null),
                            other => other.unwrap_or(Value::Null),
                        };
                        let _ = tx.try_send(value);
                    }
                }
                .boxed()
            })
            .await
            .expect("emit");
        rx
    }
}

/// The server's answer to a call sent with [`RustClient::send_call`].
pub async fn answer(mut rx: mpsc::Receiver<Value>) -> Value {
    tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await.expect("ack in time").expect("ack")
}

/// Runs a client script of tests/clients against `url` to completion, and fails with its
/// output unless it exits 0 having passed all three transport modes.
pub async fn run_client_script(program: &str, script: &str, url: &str) {
    let stdout = run_script(program, script, &[url]).await;
    // Every transport mode ran and passed: the scripts end with "N passed, 0 failed".
    assert!(stdout.contains("3 passed, 0 failed"), "{script} did not run all three modes:\n{stdout}");
}

/// Runs a script of tests/clients with `args` to completion; fails with its output unless
/// it exits 0. Returns its standard output.
pub async fn run_script(program: &str, script: &str, args: &[&str]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(script);
    let child = tokio::process::Command::new(program)
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} {}: {e}", path.display()));
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {CLIENT_TIMEOUT:?}"))
        .expect("client output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed ({}):\n{stdout}\n{stderr}", output.status);
    stdout
}
