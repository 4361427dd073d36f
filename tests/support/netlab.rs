//! Network namespaces as hosts of their own, for tests that need real addresses (needs root and
//! iproute2): a hub namespace holding a bridge, one namespace per host with a veth to the bridge
//! (host `k` of the list gets `<subnet>.k`), and one more veth from the test's own namespace
//! (`<subnet>.100`). Everything is created by [`NetLab::new`] and removed on drop, failure
//! included; stale leftovers of the same names (a killed earlier run) are removed first.

use std::os::fd::AsRawFd;
use std::process::Command;

/// The test's own address on the bridge, host part.
const TEST_HOST: u8 = 100;

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2) runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

pub struct NetLab {
    tag: String,
    subnet: String,
    hosts: Vec<String>,
}

impl NetLab {
    /// One namespace per name in `hosts`, in that order: `hosts[k - 1]` is host `k`.
    pub fn new(hosts: &[&str]) -> Self {
        // Labs of one test process (tests run in parallel threads) differ by a count; test
        // processes run one at a time.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = (std::process::id() + LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % 200;
        let lab = Self {
            tag: format!("cc{id}"),
            subnet: format!("10.{}.77", 20 + id),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        };
        lab.remove();
        let hub = lab.ns("hub");
        ip(&["netns", "add", &hub]);
        ip(&["netns", "exec", &hub, "ip", "link", "add", "br0", "type", "bridge"]);
        ip(&["netns", "exec", &hub, "ip", "link", "set", "br0", "up"]);
        for (k, host) in hosts.iter().enumerate() {
            let ns = lab.ns(host);
            ip(&["netns", "add", &ns]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            let (inner, outer) = (format!("{}n{}", lab.tag, k + 1), lab.hub_port(k + 1));
            ip(&["link", "add", &inner, "type", "veth", "peer", "name", &outer]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "netns", &hub]);
            ip(&["netns", "exec", &hub, "ip", "link", "set", &outer, "master", "br0", "up"]);
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{}.{}/24", lab.subnet, k + 1), "dev", &inner]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"]);
        }
        // The test itself reaches the hosts over one more link, from its own namespace.
        let (mine, outer) = (format!("{}t", lab.tag), format!("{}ht", lab.tag));
        ip(&["link", "add", &mine, "type", "veth", "peer", "name", &outer]);
        ip(&["link", "set", &outer, "netns", &hub]);
        ip(&["netns", "exec", &hub, "ip", "link", "set", &outer, "master", "br0", "up"]);
        ip(&["addr", "add", &format!("{}.{TEST_HOST}/24", lab.subnet), "dev", &mine]);
        ip(&["link", "set", &mine, "up"]);
        lab
    }

    /// The namespace name of `host` (or of `"hub"`).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.tag)
    }

    /// Host `k`'s address (1-based, as in [`NetLab::new`]) with `port`.
    pub fn addr(&self, k: usize, port: u16) -> String {
        format!("{}.{k}:{port}", self.subnet)
    }

    /// The test's own address on the bridge, with `port`.
    pub fn test_addr(&self, port: u16) -> String {
        format!("{}.{TEST_HOST}:{port}", self.subnet)
    }

    /// Host `k`'s address by name.
    pub fn host_addr(&self, host: &str, port: u16) -> String {
        let k = self.hosts.iter().position(|h| h == host).unwrap_or_else(|| panic!("no host {host}"));
        self.addr(k + 1, port)
    }

    /// The hub's end of host `k`'s link: every frame to or from host `k` crosses it.
    pub fn hub_port(&self, k: usize) -> String {
        format!("{}h{k}", self.tag)
    }

    /// Cuts (or restores) host `k`'s link to the bridge.
    pub fn set_link(&self, k: usize, up: bool) {
        ip(&["netns", "exec", &self.ns("hub"), "ip", "link", "set", &self.hub_port(k), if up { "up" } else { "down" }]);
    }

    /// Runs `f` on a thread of its own that lives in `host`'s namespace (or `"hub"`'s): every
    /// socket `f` creates, and every thread it starts, is there.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        host: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.ns(host));
        std::thread::spawn(move || {
            let netns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a valid descriptor changes only this thread's network namespace.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Deleting a namespace removes the veth ends in it, and with them their peers.
    fn remove(&self) {
        for name in self.hosts.iter().map(String::as_str).chain(["hub"]) {
            let _ =
                Command::new("ip").args(["netns", "del", &self.ns(name)]).stderr(std::process::Stdio::null()).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}t", self.tag)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.remove();
    }
}
