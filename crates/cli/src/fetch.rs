//! Reads a file from an `http://`/`https://` URL or a local path.
//!
//! Network reads have a connect and a total timeout and are retried a bounded number of times
//! with backoff on transport errors and server errors (5xx); client errors (4xx) are final.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

/// Largest file accepted (measurement files are a few kB).
pub const MAX_SIZE: u64 = 4 * 1024 * 1024;
const ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is larger than {MAX_SIZE} bytes", what)]
    TooLarge { what: String },
    #[error("GET {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url} failed after {attempts} attempt(s)")]
    Http {
        url: String,
        attempts: u32,
        #[source]
        source: ureq::Error,
    },
}

/// Whether `location` is fetched over the network.
pub fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// Reads `location`: an http(s) URL, a `file://` URL or a path.
pub fn fetch(location: &str) -> Result<Vec<u8>, FetchError> {
    if is_url(location) {
        return fetch_url(location);
    }
    let path = PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
    let file = std::fs::File::open(&path).map_err(|source| FetchError::File {
        path: path.clone(),
        source,
    })?;
    let mut buf = Vec::new();
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| FetchError::File {
            path: path.clone(),
            source,
        })?;
    if buf.len() as u64 > MAX_SIZE {
        return Err(FetchError::TooLarge {
            what: path.display().to_string(),
        });
    }
    Ok(buf)
}

fn fetch_url(url: &str) -> Result<Vec<u8>, FetchError> {
    fetch_url_with_headers(url, &[], &[]).map(|(body, _)| body)
}

/// GETs `url` with the request headers `send` (same timeouts and retries as [`fetch`]) and
/// returns the body with the values of the response headers `names` (`None` where absent or
/// not text).
pub fn fetch_url_with_headers(
    url: &str,
    send: &[(&str, &str)],
    names: &[&str],
) -> Result<(Vec<u8>, Vec<Option<String>>), FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(TOTAL_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut backoff = Duration::from_millis(500);
    let mut attempt = 0;
    loop {
        attempt += 1;
        tracing::debug!(url, attempt, "GET");
        let mut req = agent.get(url);
        for (k, v) in send {
            req = req.header(*k, *v);
        }
        let result = req.call().and_then(|mut resp| {
            let status = resp.status().as_u16();
            let headers: Vec<Option<String>> = names
                .iter()
                .map(|n| {
                    resp.headers()
                        .get(*n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                })
                .collect();
            let body = resp
                .body_mut()
                .with_config()
                .limit(MAX_SIZE)
                .read_to_vec()?;
            Ok((status, body, headers))
        });
        let retry = match result {
            Ok((200..=299, body, headers)) => return Ok((body, headers)),
            Ok((status, _, _)) if status >= 500 && attempt < ATTEMPTS => {
                tracing::warn!(url, status, "server error, retrying");
                true
            }
            Ok((status, _, _)) => {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status,
                })
            }
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                return Err(FetchError::TooLarge {
                    what: url.to_string(),
                })
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(url, error = %e, "request failed, retrying");
                true
            }
            Err(source) => {
                return Err(FetchError::Http {
                    url: url.to_string(),
                    attempts: attempt,
                    source,
                })
            }
        };
        if retry {
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }
}
