//! An attacker's tools for tests: a chitchat node of its choosing, chitchat's wire format by
//! hand, capturing and resending UDP datagrams (raw sockets: root), and unauthenticated RPC
//! connections. Each runs wherever its caller's thread is (see `NetLab::spawn_in`).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The gossip interval of the attacker's chitchat nodes (the nodes' default).
const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
/// A chitchat node of the attacker's choosing, joined through `seeds` with `keys`, gossiping
/// until `stop`; meanwhile `rpc` (if any) accepts connections and never says a word.
pub async fn chitchat_member(
    id: ChitchatId,
    cluster_id: String,
    seeds: Vec<String>,
    keys: Vec<(String, String)>,
    rpc: Option<SocketAddr>,
    stop: CancellationToken,
) -> Result<(), String> {
    let silent = match rpc {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| format!("bind {addr}: {e}"))?),
        None => None,
    };
    let config = ChitchatConfig {
        listen_addr: id.gossip_advertise_addr,
        chitchat_id: id,
        cluster_id,
        gossip_interval: GOSSIP_INTERVAL,
        seed_nodes: seeds,
        failure_detector_config: FailureDetectorConfig { initial_interval: GOSSIP_INTERVAL, ..Default::default() },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V1,
    };
    let handle = spawn_chitchat(config, keys, &UdpTransport).await.map_err(|e| format!("chitchat: {e}"))?;
    let mut held = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = async { silent.as_ref().unwrap().accept().await }, if silent.is_some() => {
                if let Ok((stream, _)) = accepted {
                    held.push(stream);
                }
            }
        }
    }
    handle.shutdown().await.map_err(|e| format!("chitchat shutdown: {e}"))
}

/// Chitchat's wire format, written by hand (chitchat 0.13: `message_serialize.rs`,
/// `serialize.rs`, `delta.rs`): little-endian integers, `u16`-length strings.
pub mod wire {
    use std::net::SocketAddr;

    const MAGIC: u16 = 45_139;
    const PROTOCOL_V1: u8 = 1;
    const SYN: u8 = 0;
    pub const SYN_ACK: u8 = 1;
    pub const ACK: u8 = 2;
    const OP_NODE: u8 = 0;
    const OP_KEY_VALUE: u8 = 1;
    const OP_SET_MAX_VERSION: u8 = 2;
    const BLOCK_END: u8 = 0;
    const BLOCK_UNCOMPRESSED: u8 = 2;
    const SET: u8 = 0;

    fn string(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u16).to_le_bytes());
        buf.extend(s.as_bytes());
    }

    fn addr(buf: &mut Vec<u8>, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(a) => {
                buf.push(4);
                buf.extend(a.ip().octets());
            }
            SocketAddr::V6(a) => {
                buf.push(6);
                buf.extend(a.ip().octets());
            }
        }
        buf.extend(addr.port().to_le_bytes());
    }

    /// A stream of one uncompressed block.
    fn stream(buf: &mut Vec<u8>, block: &[u8]) {
        buf.push(BLOCK_UNCOMPRESSED);
        buf.extend((block.len() as u16).to_le_bytes());
        buf.extend(block);
        buf.push(BLOCK_END);
    }

    /// A node id as chitchat writes it: name, generation, gossip address.
    fn node(buf: &mut Vec<u8>, node_id: &str, generation: u64, gossip: SocketAddr) {
        string(buf, node_id);
        buf.extend(generation.to_le_bytes());
        addr(buf, gossip);
    }

    /// A Syn for `cluster_id` whose digest names one node `(node_id, generation, gossip)` at
    /// `heartbeat`: a receiver that has not heard of that node starts to track it, and lists
    /// it in its own digests from then on.
    pub fn syn(cluster_id: &str, node_id: &str, generation: u64, gossip: SocketAddr, heartbeat: u64) -> Vec<u8> {
        let mut digest = Vec::new();
        node(&mut digest, node_id, generation, gossip);
        digest.extend(heartbeat.to_le_bytes());
        digest.extend(0u64.to_le_bytes()); // last_gc_version
        digest.extend(1u64.to_le_bytes()); // max_version
        let mut datagram = MAGIC.to_le_bytes().to_vec();
        datagram.extend([PROTOCOL_V1, SYN]);
        stream(&mut datagram, &digest);
        string(&mut datagram, cluster_id);
        datagram
    }

    /// An Ack whose delta gives the node `(node_id, generation, gossip)` the keys `keys`, at
    /// the versions after `from_version` (the version its receiver has of it).
    pub fn keys(
        node_id: &str,
        generation: u64,
        gossip: SocketAddr,
        from_version: u64,
        keys: &[(String, String)],
    ) -> Vec<u8> {
        let mut delta = vec![OP_NODE];
        node(&mut delta, node_id, generation, gossip);
        delta.extend(0u64.to_le_bytes()); // last_gc_version
        delta.extend(from_version.to_le_bytes()); // from_version_excluded
        for (i, (key, value)) in keys.iter().enumerate() {
            delta.push(OP_KEY_VALUE);
            string(&mut delta, key);
            string(&mut delta, value);
            delta.extend((from_version + 1 + i as u64).to_le_bytes());
            delta.push(SET);
        }
        let mut datagram = MAGIC.to_le_bytes().to_vec();
        datagram.extend([PROTOCOL_V1, ACK]);
        stream(&mut datagram, &delta);
        datagram
    }

    /// A SynAck (with an empty digest) or an Ack whose delta, for the node
    /// `(node_id, generation, gossip)`, sets a key at `version` and then declares `max_version`.
    /// Chitchat asserts the max version never goes below a key's version, in the gossip task: with
    /// `max_version < version` the task panics.
    pub fn delta(
        kind: u8,
        node_id: &str,
        generation: u64,
        gossip: SocketAddr,
        version: u64,
        max_version: u64,
    ) -> Vec<u8> {
        let mut delta = vec![OP_NODE];
        node(&mut delta, node_id, generation, gossip);
        delta.extend(0u64.to_le_bytes()); // last_gc_version
        delta.extend(0u64.to_le_bytes()); // from_version_excluded
        delta.push(OP_KEY_VALUE);
        string(&mut delta, "crafted");
        string(&mut delta, "1");
        delta.extend(version.to_le_bytes());
        delta.push(SET);
        delta.push(OP_SET_MAX_VERSION);
        delta.extend(max_version.to_le_bytes());

        let mut datagram = MAGIC.to_le_bytes().to_vec();
        datagram.extend([PROTOCOL_V1, kind]);
        if kind == SYN_ACK {
            stream(&mut datagram, &[]); // the digest
        }
        stream(&mut datagram, &delta);
        datagram
    }
}

/// A UDP datagram seen on the wire.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// Sends `d` again as it was: from its source (spoofed, through a raw socket) to its destination.
pub fn resend(d: &Datagram) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (d.from, d.to) else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let udp_len = 8 + d.payload.len();
    // The kernel fills in the total length, the id and the checksum; a UDP checksum of 0 is none.
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    packet.extend(from.ip().octets());
    packet.extend(to.ip().octets());
    packet.extend(from.port().to_be_bytes());
    packet.extend(to.port().to_be_bytes());
    packet.extend((udp_len as u16).to_be_bytes());
    packet.extend([0, 0]);
    packet.extend(&d.payload);
    // SAFETY: a raw socket this function owns, and a zeroed sockaddr_in filled as ip(7) says.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let sent = libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&sin as *const libc::sockaddr_in).cast(),
            len,
        );
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Captures gossip datagrams (UDP from and to port `port`) crossing interface `iface`, until
/// `want` of them or `limit`; runs on a thread in the interface's namespace.
pub fn capture(iface: &str, port: u16, want: usize, limit: Duration) -> Result<Vec<Datagram>, String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // Every protocol: on a bridge port, only such taps see the frames (the bridge takes them
    // before protocol-specific ones); parse_udp keeps the IPv4 ones.
    const ETH_P_ALL: u16 = 0x0003;
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: plain socket calls on a descriptor this function owns; the structs are zeroed
    // and filled as packet(7) says.
    let fd = unsafe {
        let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_ALL.to_be()));
        if raw < 0 {
            return Err(format!("packet socket: {}", std::io::Error::last_os_error()));
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let mut ll: libc::sockaddr_ll = std::mem::zeroed();
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = ETH_P_ALL.to_be();
        ll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        if libc::bind(fd.as_raw_fd(), (&ll as *const libc::sockaddr_ll).cast(), len) != 0 {
            return Err(format!("bind to {iface}: {}", std::io::Error::last_os_error()));
        }
        let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
        let tv_len = std::mem::size_of::<libc::timeval>() as u32;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            tv_len,
        );
        fd
    };
    let mut file = std::fs::File::from(fd);
    let deadline = Instant::now() + limit;
    let mut frame = vec![0u8; 65_536];
    let mut seen = Vec::new();
    while seen.len() < want && Instant::now() < deadline {
        let n = match std::io::Read::read(&mut file, &mut frame) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(format!("capture: {e}")),
        };
        if let Some(d) = parse_udp(&frame[..n]).filter(|d| d.from.port() == port && d.to.port() == port) {
            seen.push(d);
        }
    }
    Ok(seen)
}

/// An Ethernet frame's IPv4 UDP datagram.
fn parse_udp(frame: &[u8]) -> Option<Datagram> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let header = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let udp = ip.get(header..total)?;
    let at = |b: &[u8]| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let from = SocketAddr::from((at(&ip[12..16]), u16::from_be_bytes([udp[0], udp[1]])));
    let to = SocketAddr::from((at(&ip[16..20]), u16::from_be_bytes([udp[2], udp[3]])));
    Some(Datagram { from, to, payload: udp.get(8..)?.to_vec() })
}

/// Sends `bytes` on a fresh connection to `addr` (after reading the listener's greeting, if
/// `greeted`), then expects the node to close the connection within 6 s.
pub async fn refused(addr: SocketAddr, bytes: Vec<u8>, greeted: bool) -> Result<(), String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr} timed out"))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    if greeted {
        // The old handshake's 32-byte nonce, if the listener still sends one.
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await;
    }
    // A write may already fail: the node closed first.
    let _ = conn.write_all(&bytes).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
            Err(_) => {
                return Err(format!("{addr} kept the connection open 6 s after {} unauthenticated bytes", bytes.len()))
            }
        }
    }
}

/// The hello of the old HMAC handshake (`rpc::auth`), made with a guessed secret.
pub fn hmac_hello() -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let nonce: [u8; 32] = rand::random();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"a guessed secret").unwrap();
    mac.update(b"clusterchat-rpc-v1 dialer");
    mac.update(&[0u8; 32]);
    mac.update(&nonce);
    [&nonce[..], &mac.finalize().into_bytes()[..]].concat()
}

/// An unauthenticated `Push::Publish` of a chat message `message` to `room` of `/chat`, framed
/// as the RPC frames (4-byte big-endian length, bincode).
pub fn publish_frame(room: &str, message: &str) -> Vec<u8> {
    use clusterchat::rpc::{message::encode, Push, RpcFrame, WsFrame};
    let packet = serde_json::json!(["chat message", { "user": "evil", "room": room, "message": message }, "evil-1"]);
    let frame = RpcFrame::Push(Push::Publish {
        nsp: "/chat".into(),
        room: room.into(),
        stamp: Some((0xe, 1)),
        frames: vec![WsFrame::Text(format!("42/chat,{packet}"))],
    });
    let body = encode(&frame).expect("encodes");
    [&(body.len() as u32).to_be_bytes()[..], &body].concat()
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}
