//! A TCP proxy in front of a real server, which a test can cut (every open connection closed,
//! new ones refused) and restore — a database or broker outage without stopping the shared one.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// Forwards connections from a local port to `upstream` while up.
pub struct TcpProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
    generation: watch::Sender<u64>,
    /// Where new connections go.
    upstream: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` (`host:port`), up or already cut.
    pub async fn start(upstream: &str, up: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(up));
        let attempts = Arc::new(AtomicU64::new(0));
        let (generation, _) = watch::channel(0u64);
        let upstream = Arc::new(Mutex::new(upstream.to_owned()));
        let task = {
            let up = up.clone();
            let attempts = attempts.clone();
            let generation = generation.clone();
            let target = upstream.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = target.lock().map(|t| t.clone()).unwrap_or_default();
                    let mut cut = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Ok(Self {
            addr,
            up,
            attempts,
            generation,
            upstream,
            task,
        })
    }

    /// Closes every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// How many connections clients have opened to the proxy, refused ones included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Sends new connections to `upstream` from now on and closes the open ones — what moving
    /// a virtual IP (or a Kubernetes service) to another server does.
    pub fn retarget(&self, upstream: &str) {
        if let Ok(mut target) = self.upstream.lock() {
            *target = upstream.to_owned();
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// `url` (`scheme://[user@]host:port/path`) with its host and port replaced by this proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority
            .rsplit_once('@')
            .map_or(String::new(), |(user, _)| format!("{user}@"));
        format!("{scheme}://{user}{}/{path}", self.addr)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
