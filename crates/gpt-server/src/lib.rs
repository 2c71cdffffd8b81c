//! An OpenAI-compatible HTTP server on [`gpt_engine::engine::Engine`].
//!
//! * Endpoints ([`app::router`]): `POST /v1/chat/completions`, `POST /v1/completions`,
//!   `POST /v1/responses` (+ `GET`/`DELETE /v1/responses/{id}`), `GET /v1/models`,
//!   `GET /health` (503 until the model is loaded), `GET /metrics` (Prometheus),
//!   `POST /tokenize`, `POST /detokenize`.
//! * Requests ([`api`]) are lenient serde types (unknown fields kept and ignored); errors
//!   ([`error::ApiError`]) are OpenAI error objects with the right status.
//! * Each choice runs on its own task ([`gen`]): the engine's events are parsed leniently
//!   from harmony into API deltas (reasoning, content, tool calls); dropping the stream
//!   cancels the sequence.
//! * Constrained decoding ([`guide`]): tool choice, JSON answers and the reasoning budget
//!   are enforced by a token guide built on llguidance.
//! * [`serve`] binds first, then loads the model in the background.

pub mod api;
pub mod app;
pub mod collect;
pub mod error;
pub mod gen;
pub mod guide;
pub mod params;
pub mod routes;
pub mod state;
pub mod store;

use std::sync::Arc;

use gpt_engine::engine::Engine;
pub use state::{AppState, ServerConfig};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// `host:port`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Installs the Prometheus recorder (once per process; later calls get `None`).
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok()
}

/// Binds `config.host:config.port`, starts answering (`/health` is 503 meanwhile), runs
/// `load` on a blocking thread, and serves until Ctrl-C. `on_bound` gets the bound address.
pub async fn serve<L>(
    config: ServerConfig,
    load: L,
    on_bound: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<Engine, String> + Send + 'static,
{
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    if let Ok(a) = listener.local_addr() {
        on_bound(a);
    }
    let st = AppState::new(config, install_metrics());
    let loading = st.clone();
    tokio::task::spawn_blocking(move || {
        let result = load().and_then(|engine| loading.install(engine));
        match result {
            Ok(()) => tracing::info!("model ready"),
            Err(e) => {
                tracing::error!(error = %e, "loading the model failed");
                if let Ok(mut slot) = loading.load_error.lock() {
                    *slot = Some(e);
                }
            }
        }
    });
    axum::serve(listener, app::router(st))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(ServeError::Serve)
}

/// A state with `engine` installed, for tests and embedding.
pub fn ready_state(config: ServerConfig, engine: Engine) -> Result<Arc<AppState>, String> {
    let st = AppState::new(config, install_metrics());
    st.install(engine)?;
    Ok(st)
}

/// [`serve`] on a new multi-threaded tokio runtime (for the CLI).
pub fn serve_blocking<L>(
    config: ServerConfig,
    load: L,
    on_bound: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<Engine, String> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Serve)?;
    rt.block_on(serve(config, load, on_bound))
}

/// Parses a byte size: `1073741824`, `512M`, `4G`, `1.5GiB`, `800MB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4G, 512M, 1073741824)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    Ok((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(super::parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(super::parse_size("100").unwrap(), 100);
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("4X").is_err());
    }
}
