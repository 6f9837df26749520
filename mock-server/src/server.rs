//! Serving the router on 127.0.0.1 (issue 3), optionally over TLS.
//!
//! A hand-written accept loop (rather than `axum::serve`) so that a connection can be
//! dropped without an answer for the `reset` fault: the handler marks the response, the
//! connection service turns it into an error, and the socket is closed with `SO_LINGER 0`
//! (a TCP RST) through a duplicate of its descriptor.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::routes::{is_reset, Scheme};
use crate::{app, MockState};

/// How to serve the mock.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Serve HTTPS with a generated certificate.
    pub tls: bool,
    /// Load the state from this file if it exists and persist every write to it.
    pub state_file: Option<PathBuf>,
    /// Where to write the CA certificate (default: next to the state file, else a new
    /// temporary directory).
    pub cert_dir: Option<PathBuf>,
}

/// A running mock; dropping it (or [`RunningMock::shutdown`]) stops the server.
pub struct RunningMock {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub base_url: String,
    pub port: u16,
    pub state: MockState,
    /// PEM of the CA that signed the server certificate (with `tls`).
    pub ca_cert_pem: Option<String>,
    /// Where the CA PEM was written (with `tls`).
    pub ca_cert_path: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningMock {
    /// Stop accepting, close every connection and wait for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Bind 127.0.0.1 and serve `state` until shut down.
pub async fn start(state: MockState, options: ServeOptions) -> anyhow::Result<RunningMock> {
    if let Some(path) = &options.state_file {
        state.persist_to(path.clone())?;
    }
    let listener = TcpListener::bind(("127.0.0.1", options.port))
        .await
        .with_context(|| format!("failed to bind 127.0.0.1:{}", options.port))?;
    let port = listener.local_addr()?.port();

    let (acceptor, ca_cert_pem, ca_cert_path) = if options.tls {
        let certs = crate::tls::generate()?;
        let dir = match (&options.cert_dir, &options.state_file) {
            (Some(dir), _) => dir.clone(),
            (None, Some(state_file)) => state_file
                .parent()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                })
                .unwrap_or_else(|| PathBuf::from(".")),
            (None, None) => std::env::temp_dir().join(format!("mock-arm-{}", uuid::Uuid::new_v4())),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let path = dir.join(format!("mock-arm-ca-{port}.pem"));
        std::fs::write(&path, &certs.ca_pem)
            .with_context(|| format!("failed to write {}", path.display()))?;
        (
            Some(tokio_rustls::TlsAcceptor::from(certs.server_config)),
            Some(certs.ca_pem),
            Some(path),
        )
    } else {
        (None, None, None)
    };
    let scheme = if options.tls { "https" } else { "http" };

    let router = app(state.clone());
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    connections.spawn(serve_connection(stream, acceptor.clone(), router.clone(), scheme));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
    });

    Ok(RunningMock {
        base_url: format!("{scheme}://127.0.0.1:{port}"),
        port,
        state,
        ca_cert_pem,
        ca_cert_path,
        stop: Some(stop),
        task: Some(task),
    })
}

/// The error that makes hyper drop a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection reset by injected fault")]
struct ResetByFault;

async fn serve_connection(
    stream: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    scheme: &'static str,
) {
    let _ = stream.set_nodelay(true);
    // A duplicate descriptor lets the reset fault set SO_LINGER 0 after hyper owns the stream.
    let raw = stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(|fd| Arc::new(socket2::Socket::from(fd)));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let router = router.clone();
        let raw = raw.clone();
        async move {
            request.extensions_mut().insert(Scheme(scheme));
            let response = match router.oneshot(request.map(Body::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if is_reset(&response) {
                if let Some(socket) = raw {
                    let _ = socket.set_linger(Some(Duration::ZERO));
                }
                return Err(ResetByFault);
            }
            Ok::<_, ResetByFault>(response)
        }
    });
    let builder = hyper::server::conn::http1::Builder::new();
    match acceptor {
        Some(acceptor) => {
            if let Ok(tls) = acceptor.accept(stream).await {
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            }
        }
        None => {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    }
}
