//! The socket.io Admin UI's protocol across a real three-node cluster, with socket.io-client
//! v4 as the UI (`tests/clients/admin_v4.mjs`), connected through the round-robin balancer:
//! a wrong password is refused; the UI lists three servers and chat users on two nodes with
//! their rooms; `join`, `emit`, `leave` and `_disconnect` act on sockets of other nodes than
//! the UI's; a malformed command is answered with an error; its
//! session id lets it back in on another node; read-only refuses commands. And every node
//! serves the UI's files, fonts included, at `/admin/` (needs `npm ci` in admin/ and
//! tests/clients: scripts/test.sh does both).

use std::sync::OnceLock;

use clusterchat::admin::AdminSettings;
use clusterchat::config::NodeConfig;
use clusterchat::node::{Node, Service};
use serde_json::json;

mod support;
use support::chat_client::run_script;
use support::cluster::TestCluster;
use support::rr_proxy::RoundRobinProxy;

const PASSWORD: &str = "the-admin-test-password";

/// The password's hash, at bcrypt's lowest cost: the check is what is tested, not its price.
fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash(PASSWORD, 4).expect("bcrypt hash")).clone()
}

fn admin_settings(read_only: bool) -> AdminSettings {
    let ui_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("admin");
    AdminSettings {
        password_hash: password_hash(),
        read_only,
        stats_interval_ms: 200,
        ui_dir,
        ..AdminSettings::default()
    }
}

fn with_admin(c: &mut NodeConfig) {
    c.admin = Some(admin_settings(false));
}

fn with_read_only_admin(c: &mut NodeConfig) {
    c.admin = Some(admin_settings(true));
}

async fn run_admin_script(configure: fn(&mut NodeConfig), mode: &str, want: &str) {
    let cluster = TestCluster::start(3, Box::new(|c| vec![Service::chat(c).expect("chat service")]), configure).await;
    let proxy = RoundRobinProxy::start("127.0.0.1:0".parse().unwrap(), cluster.http_addrs()).await.expect("balancer");
    let setup = json!({
        "mode": mode,
        "admin": format!("http://{}", proxy.addr()),
        "nodes": (0..3).map(|i| cluster.url(i)).collect::<Vec<_>>(),
        "servers": 3,
        "username": "admin",
        "password": PASSWORD,
    });
    let stdout = run_script("node", "admin_v4.mjs", &[&setup.to_string()]).await;
    assert!(stdout.contains(want), "admin_v4.mjs ({mode}) did not pass every check:\n{stdout}");
    drop(proxy);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_sees_and_commands_the_whole_cluster() {
    run_admin_script(with_admin, "full", "10 passed, 0 failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_commands() {
    run_admin_script(with_read_only_admin, "readonly", "3 passed, 0 failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_is_served_offline_at_admin() {
    let config = NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        drain_ms: 0,
        admin: Some(admin_settings(false)),
        ..NodeConfig::default()
    };
    let node = Node::start(config).await.expect("node starts");
    let base = format!("http://{}", node.http_addr());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(&path).send().await.expect("GET");
            let status = r.status().as_u16();
            let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
            (status, location, r.text().await.unwrap_or_default())
        }
    };
    let (status, location, _) = get(format!("{base}/admin")).await;
    assert_eq!((status, location.as_deref()), (301, Some("/admin/")));
    let (status, _, page) = get(format!("{base}/admin/")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Socket.IO Admin UI"), "{page}");
    assert!(!page.contains("https://") && !page.contains("//cdn") && !page.contains("googleapis"), "{page}");
    // Every file the page links, and the fonts its stylesheets name, come from the node.
    let links: Vec<String> = page
        .split(['"', '\''])
        .filter(|s| s.starts_with("css/") || s.starts_with("js/") || s.starts_with("fonts/") || *s == "favicon.png")
        .map(str::to_owned)
        .collect();
    assert!(links.len() >= 8, "{links:?}");
    for link in &links {
        let (status, _, body) = get(format!("{base}/admin/{link}")).await;
        assert_eq!(status, 200, "{link}: {body}");
    }
    let fonts = [
        "fonts/mdi/fonts/materialdesignicons-webfont.woff2",
        "fonts/roboto/files/roboto-latin-400-normal.woff2",
        "fonts/roboto/files/roboto-latin-700-normal.woff2",
    ];
    let (_, _, mdi_css) = get(format!("{base}/admin/fonts/mdi/css/materialdesignicons.min.css")).await;
    assert!(mdi_css.contains("../fonts/materialdesignicons-webfont.woff2"), "the icon font moved");
    let (_, _, roboto_css) = get(format!("{base}/admin/fonts/roboto/latin-400.css")).await;
    assert!(roboto_css.contains("./files/roboto-latin-400-normal.woff2"), "the Roboto files moved");
    for font in fonts {
        assert_eq!(get(format!("{base}/admin/{font}")).await.0, 200, "{font}");
    }
    for outside in ["/admin/../Cargo.toml", "/admin/%2e%2e/Cargo.toml", "/admin/js/../../package.json", "/admin/x.toml"]
    {
        assert_eq!(get(format!("{base}{outside}")).await.0, 404, "{outside}");
    }
    node.shutdown().await;

    // Without [admin], no UI.
    let plain = Node::start(NodeConfig { http: "127.0.0.1:0".parse().unwrap(), drain_ms: 0, ..NodeConfig::default() })
        .await
        .expect("node starts");
    assert_eq!(get(format!("http://{}/admin/", plain.http_addr())).await.0, 404);
    plain.shutdown().await;
}

#[tokio::test]
async fn admin_without_a_password_hash_is_refused_at_start() {
    let config = NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        admin: Some(AdminSettings::default()),
        ..NodeConfig::default()
    };
    let err = Node::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("admin.password_hash is required"), "{err}");
    let config = NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        admin: Some(AdminSettings { password_hash: "plain-text".into(), ..AdminSettings::default() }),
        ..NodeConfig::default()
    };
    let err = Node::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("must be a bcrypt hash"), "{err}");
}

/// A login's password check (bcrypt, on purpose slow) holds up no other connection of the
/// node's one connection thread: while it runs, a chat client's CONNECTs keep being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_check_holds_up_no_other_connection() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    // Cost 10: a check takes tens of milliseconds optimized, far more in a debug build; a
    // CONNECT answered on the same thread takes well under a millisecond.
    let slow = bcrypt::hash(PASSWORD, 10).expect("bcrypt hash");
    let config = NodeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        drain_ms: 0,
        io_threads: Some(1),
        admin: Some(AdminSettings { password_hash: slow, ..admin_settings(false) }),
        ..NodeConfig::default()
    };
    let node = Node::start(config).await.expect("node starts");
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", node.http_addr());
    type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
    // The next text frame that starts with `prefix` (the server's pings are answered).
    async fn next_with(ws: &mut Ws, prefix: &str) -> String {
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next()).await;
            match frame.expect("a frame in time").expect("open").expect("a frame") {
                Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).await.expect("pong"),
                Message::Text(t) if t.starts_with(prefix) => return t.to_string(),
                _ => {}
            }
        }
    }
    let (mut chat, _) = tokio_tungstenite::connect_async(&url).await.expect("chat WebSocket");
    let (mut admin, _) = tokio_tungstenite::connect_async(&url).await.expect("admin WebSocket");
    next_with(&mut chat, "0{").await;
    next_with(&mut admin, "0{").await;

    let login = serde_json::json!({ "username": "admin", "password": "not-the-password" });
    admin.send(Message::text(format!("40/admin,{login}"))).await.expect("admin CONNECT");
    let refused = next_with(&mut admin, "44/admin,");
    tokio::pin!(refused);
    // Round trips on the chat connection, one after another, until the login is answered: a
    // CONNECT to a namespace that does not exist is refused at once, on the same thread.
    let mut answered = 0;
    let refusal = loop {
        chat.send(Message::text("40/nowhere,")).await.expect("chat CONNECT");
        tokio::select! {
            refusal = &mut refused => break refusal,
            answer = next_with(&mut chat, "44/nowhere,") => {
                assert!(answer.contains("Invalid namespace"), "{answer}");
                answered += 1;
            }
        }
    };
    assert!(refusal.contains("invalid credentials"), "{refusal}");
    assert!(answered >= 3, "only {answered} chat round trips while the password was checked");
    node.shutdown().await;
}
