//! What the handlers share: the configuration, the model once it is loaded, the stored
//! responses and the metrics recorder.

use std::sync::{Arc, Mutex, OnceLock};

use gpt_engine::engine::Engine;
use gpt_engine::tokenizer::Tokenizer;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::error::{ApiError, ApiResult};
use crate::guide::GuideEnv;
use crate::store::ResponseStore;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (`127.0.0.1` by default).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Bearer token required on every endpoint but `/health`.
    pub api_key: Option<String>,
    /// Origins allowed by CORS (none: CORS closed).
    pub cors_origins: Vec<String>,
    /// Most analysis tokens per answer, unless a request says otherwise.
    pub reasoning_budget: Option<usize>,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// The model's name in `/v1/models` and answers.
    pub model_name: String,
    /// Most stored responses (`previous_response_id`).
    pub max_stored_responses: usize,
    /// Most choices (`n`) per request.
    pub max_n: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            cors_origins: Vec::new(),
            reasoning_budget: None,
            body_limit: 8 << 20,
            model_name: "gpt-oss".into(),
            max_stored_responses: 1024,
            max_n: 8,
        }
    }
}

/// The loaded model.
pub struct Ready {
    /// The engine.
    pub engine: Engine,
    /// Its tokenizer.
    pub tok: Arc<Tokenizer>,
    /// Constrained decoding over it.
    pub guides: Arc<GuideEnv>,
    /// `<|return|>` and `<|call|>`.
    pub stop_ids: Vec<u32>,
    /// When it became ready (unix seconds).
    pub created: u64,
}

/// The shared state.
pub struct AppState {
    /// Configuration.
    pub config: ServerConfig,
    /// Set once the model is loaded.
    pub ready: OnceLock<Ready>,
    /// Why loading failed, if it did.
    pub load_error: Mutex<Option<String>>,
    /// Stored responses.
    pub store: ResponseStore,
    /// Prometheus rendering.
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    /// A state with nothing loaded yet.
    pub fn new(config: ServerConfig, metrics: Option<PrometheusHandle>) -> Arc<Self> {
        Arc::new(Self {
            store: ResponseStore::new(config.max_stored_responses),
            config,
            ready: OnceLock::new(),
            load_error: Mutex::new(None),
            metrics,
        })
    }

    /// The model, or a 503 while it loads.
    pub fn ready(&self) -> ApiResult<&Ready> {
        self.ready.get().ok_or_else(|| {
            let failed = self.load_error.lock().ok().and_then(|e| e.clone());
            match failed {
                Some(e) => ApiError {
                    message: format!("the model failed to load: {e}"),
                    code: Some("model_load_failed"),
                    retry_after: None,
                    ..ApiError::loading()
                },
                None => ApiError::loading(),
            }
        })
    }

    /// Installs the loaded engine (builds the constrained-decoding environment).
    pub fn install(&self, engine: Engine) -> Result<(), String> {
        let tok = engine
            .tokenizer_handle()
            .ok_or("the model file has no tokenizer")?;
        let guides = Arc::new(GuideEnv::new(tok.clone()).map_err(|e| e.to_string())?);
        let stop_ids = ["<|return|>", "<|call|>"]
            .iter()
            .filter_map(|n| tok.token_to_id(n))
            .collect();
        let created = unix_now();
        self.ready
            .set(Ready {
                engine,
                tok,
                guides,
                stop_ids,
                created,
            })
            .map_err(|_| "the model is already loaded".to_string())
    }
}

/// Seconds since 1970.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Today's date (UTC), `YYYY-MM-DD`, for the harmony system message.
pub fn today() -> String {
    let days = (unix_now() / 86_400) as i64;
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A random id with `prefix` (`chatcmpl-`, `call_`, `resp_`).
pub fn new_id(prefix: &str) -> String {
    let n: u128 = rand::random();
    format!("{prefix}{n:032x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn today_is_a_date() {
        let t = super::today();
        assert_eq!(t.len(), 10);
        assert!(t.starts_with("20"));
        assert_eq!(&t[4..5], "-");
    }
}
