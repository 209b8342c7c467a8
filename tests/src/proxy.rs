//! A TCP proxy on loopback for fault tests: it relays byte for byte to a
//! target and can cut every connection, refuse new ones, stall the link
//! without closing it (a network partition as a peer sees it), or switch to
//! another target (a load balancer moving clients to another node).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// A running proxy; stops (and drops its connections) on `Drop`.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    target: Mutex<SocketAddr>,
    refuse: Mutex<bool>,
    stalled: watch::Sender<bool>,
    relays: Mutex<Vec<AbortHandle>>,
}

impl Proxy {
    /// Listens on a free loopback port and relays to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            refuse: Mutex::new(false),
            stalled: watch::channel(false).0,
            relays: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *accepting.refuse.lock().expect("refuse lock") {
                    drop(client);
                    continue;
                }
                let target = *accepting.target.lock().expect("target lock");
                let stalled = accepting.stalled.subscribe();
                let relay = tokio::spawn(relay(client, target, stalled));
                let mut relays = accepting.relays.lock().expect("relays lock");
                relays.retain(|r| !r.is_finished());
                relays.push(relay.abort_handle());
            }
        });
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// New connections go to `target` (live ones stay where they are).
    pub fn retarget(&self, target: SocketAddr) {
        *self.shared.target.lock().expect("target lock") = target;
    }

    /// Drops every relayed connection: both ends see the socket close.
    pub fn cut(&self) {
        for relay in self.shared.relays.lock().expect("relays lock").drain(..) {
            relay.abort();
        }
    }

    /// While on, new connections are accepted and closed at once.
    pub fn refuse(&self, on: bool) {
        *self.shared.refuse.lock().expect("refuse lock") = on;
    }

    /// While on, no byte passes in either direction and nothing is closed.
    pub fn stall(&self, on: bool) {
        self.shared.stalled.send_replace(on);
    }

    /// Connections relayed now.
    pub fn live(&self) -> usize {
        let mut relays = self.shared.relays.lock().expect("relays lock");
        relays.retain(|r| !r.is_finished());
        relays.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn relay(client: TcpStream, target: SocketAddr, stalled: watch::Receiver<bool>) {
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (up_read, up_write) = upstream.into_split();
    tokio::select! {
        _ = pipe(client_read, up_write, stalled.clone()) => {}
        _ = pipe(up_read, client_write, stalled) => {}
    }
}

/// Copies `from` to `to`, holding each chunk while the link is stalled.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
