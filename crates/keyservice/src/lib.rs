//! KeyService: `/kms.API/GetDataKey` returns `HKDF(masterKey, masterSalt, "key-" + id, length)`.
//!
//! It holds the master secret, so it is served only to cluster members: the Bootstrapper binds
//! it behind mutual TLS with client certificates from the cluster CA (see `bootstrapper::services`).
//! This crate is the request handling only; transport is the caller's choice.

#![forbid(unsafe_code)]

use std::sync::Arc;

use proto::kms::api_server::Api;
use proto::kms::{GetDataKeyRequest, GetDataKeyResponse};
use tonic::{Request, Response, Status};

/// Largest key we hand out (HKDF-SHA256 can produce at most 255 × 32 bytes).
pub const MAX_KEY_LEN: u32 = 255 * 32;

pub struct KeyService {
    master: Arc<keys::MasterSecret>,
}

impl KeyService {
    pub fn new(master: Arc<keys::MasterSecret>) -> Self {
        Self { master }
    }
}

#[tonic::async_trait]
impl Api for KeyService {
    async fn get_data_key(
        &self,
        req: Request<GetDataKeyRequest>,
    ) -> Result<Response<GetDataKeyResponse>, Status> {
        let r = req.into_inner();
        if r.data_key_id.is_empty() {
            return Err(Status::invalid_argument("data_key_id is empty"));
        }
        if r.length == 0 || r.length > MAX_KEY_LEN {
            return Err(Status::invalid_argument(format!(
                "length must be 1..={MAX_KEY_LEN}, got {}",
                r.length
            )));
        }
        tracing::debug!(id = %r.data_key_id, len = r.length, "data key requested");
        let key = self
            .master
            .data_key(&r.data_key_id, r.length as usize)
            .map_err(|_| Status::internal("deriving the key failed"))?;
        Ok(Response::new(GetDataKeyResponse {
            data_key: key.expose().to_vec(),
        }))
    }
}
