//! Verified identity end to end: a node with `[auth] jwt` (HS256, audience "chat") and real
//! clients, socket.io-client v4 and python-socketio, each over websocket and polling. A valid
//! token connects under its `sub` (whatever `user` the client claims); an expired, not yet
//! valid, forged, wrong-audience or missing token is refused with a CONNECT_ERROR naming why.
//!
//! The scripts need `npm ci` in tests/clients and the pip requirements (scripts/test.sh does
//! both); a missing client fails the test.

use std::time::{SystemTime, UNIX_EPOCH};

use clusterchat::auth::{AuthSettings, JwtSettings};
use clusterchat::config::NodeConfig;
use clusterchat::node::Node;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

mod support;
use support::chat_client::run_script;

const SECRET: &str = "the-node-secret-for-jwt-tests";

fn settings() -> JwtSettings {
    JwtSettings { secret: Some(SECRET.into()), audience: Some("chat".into()), ..JwtSettings::default() }
}

fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("token")
}

/// The cases every client runs: what it sends, and the user or CONNECT_ERROR message it gets.
fn cases() -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = |extra: Value| {
        let mut c = json!({ "sub": "alice", "aud": "chat", "exp": now + 600 });
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    let minted = settings().mint("alice", 600).expect("minted token");
    json!([
        { "name": "valid", "auth": { "token": minted, "user": "mallory" }, "user": "alice" },
        { "name": "expired", "auth": { "token": token(SECRET, claims(json!({ "exp": now - 120 }))) },
          "error": "token expired" },
        { "name": "not yet valid", "auth": { "token": token(SECRET, claims(json!({ "nbf": now + 300 }))) },
          "error": "token not valid yet (nbf)" },
        { "name": "forged", "auth": { "token": token("someone-elses-secret-key", claims(json!({}))) },
          "error": "token signature is invalid" },
        { "name": "wrong audience", "auth": { "token": token(SECRET, claims(json!({ "aud": "billing" }))) },
          "error": "token is for another audience" },
        { "name": "missing", "auth": { "user": "alice" },
          "error": "a token is required: connect with auth {token}" },
    ])
}

async fn start_node() -> Node {
    let config = NodeConfig {
        node_id: "jwt1".into(),
        http: "127.0.0.1:0".parse().unwrap(),
        drain_ms: 0,
        auth: AuthSettings { jwt: Some(settings()) },
        ..NodeConfig::default()
    };
    Node::start(config).await.expect("node starts")
}

async fn run_cases(program: &str, script: &str) {
    let node = start_node().await;
    let cases = cases();
    let want = format!("{} passed, 0 failed", cases.as_array().unwrap().len() * 2);
    let url = format!("http://{}", node.http_addr());
    let stdout = run_script(program, script, &[&url, &cases.to_string()]).await;
    assert!(stdout.contains(&want), "{script} did not run every case over both transports:\n{stdout}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_v4_with_tokens() {
    run_cases("node", "jwt_v4.mjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_socketio_with_tokens() {
    run_cases("python3", "jwt_py.py").await;
}

#[tokio::test]
async fn a_node_whose_key_cannot_be_read_does_not_start() {
    let jwt = JwtSettings {
        algorithm: clusterchat::auth::JwtAlgorithm::RS256,
        public_key: Some("/nonexistent/issuer.pem".into()),
        ..JwtSettings::default()
    };
    let config = NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        auth: AuthSettings { jwt: Some(jwt) },
        ..NodeConfig::default()
    };
    let err = Node::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("/nonexistent/issuer.pem"), "{err}");
}

#[tokio::test]
async fn the_token_subcommand_mints_what_the_node_accepts() {
    let dir = std::env::temp_dir().join(format!("clusterchat-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(&config, format!("[auth]\njwt = {{ secret = \"{SECRET}\", audience = \"chat\" }}\n")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterchat"))
        .args(["token", "--user", "bob", "--ttl", "60", "--config"])
        .arg(&config)
        .output()
        .await
        .expect("clusterchat token runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let verifier = settings().verifier().unwrap();
    assert_eq!(verifier.user(&json!({ "token": token })), Ok("bob".into()));
    // A secret too short to be safe is refused, with the reason.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_clusterchat"))
        .args(["token", "--user", "bob", "--secret", "short"])
        .output()
        .await
        .expect("clusterchat token runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 bytes"));
    std::fs::remove_dir_all(&dir).unwrap();
}
