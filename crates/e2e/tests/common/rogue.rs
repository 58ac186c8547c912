//! A machine with its own real swtpm, booted (measured) exactly like a node of a cluster's
//! image, that the tests and the join benchmark let attest to a JoinService directly. Shared
//! by `tests/join_refusals.rs` and `benches/join.rs` (`#[path]` module).

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use attestation::Variant;
use proto::join::api_client::ApiClient;
use proto::join::IssueJoinTicketRequest;
use provider_local::cloud::{CloudState, NodeRecord, Role, PORT_JOIN};
use tpm::swtpm::{unique_loopback_ip, Swtpm, SwtpmConfig};

pub struct Rogue {
    _swtpm: Swtpm,
    pub tpm: Arc<tpm::Tpm>,
    pub ip: Ipv4Addr,
}

impl Rogue {
    /// Starts a TPM in `dir` on a fresh loopback address and measures `image` into it.
    pub fn boot(dir: &Path, image: &Path) -> Rogue {
        let ip = unique_loopback_ip();
        let swtpm = Swtpm::spawn_owned(&SwtpmConfig::new(dir)).unwrap();
        provider_local::launcher::measure(&provider_local::launcher::LaunchArgs {
            image: image.to_path_buf(),
            tcti: swtpm.tcti(),
            variant: Variant::LocalVtpm,
            run_dir: dir.join("boot"),
            boot_args: vec![],
        })
        .unwrap();
        let tpm = Arc::new(tpm::Tpm::open(&swtpm.tcti()).unwrap());
        Rogue {
            _swtpm: swtpm,
            tpm,
            ip,
        }
    }

    /// The provider's record of this machine as worker `name`, vouching for its AK.
    pub fn record(&self, ws: &Path, name: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            role: Role::Worker,
            group: "worker_default".into(),
            address: self.ip,
            dir: ws.join(name),
            ak_public: Some(hex::encode(self.tpm.attestation_key().unwrap())),
            swtpm: None,
            process: None,
            internal_address: None,
        }
    }

    /// Lets the provider vouch for this machine's AK, as if it had created it as `name`.
    #[allow(dead_code)]
    pub fn vouch(&self, ws: &Path, name: &str) {
        let path = CloudState::path(ws);
        let mut cloud = CloudState::load(&path).unwrap().unwrap();
        cloud.nodes.push(self.record(ws, name));
        cloud.save(&path).unwrap();
    }

    /// One `IssueJoinTicket` as a worker over a new aTLS connection, attesting with its TPM.
    pub async fn join(&self, cp: Ipv4Addr, disk_uuid: &str) -> Result<(), tonic::Status> {
        let issuer: Arc<dyn attestation::Issuer> =
            Arc::new(tpm::TpmIssuer::new(self.tpm.clone(), Variant::LocalVtpm).unwrap());
        self.join_with(cp, issuer, disk_uuid).await
    }

    /// The same with another issuer (e.g. one that replays an old document).
    pub async fn join_with(
        &self,
        cp: Ipv4Addr,
        issuer: Arc<dyn attestation::Issuer>,
        disk_uuid: &str,
    ) -> Result<(), tonic::Status> {
        let cfg = atls::client::ClientConfig::new(Some(issuer), vec![]);
        let (channel, _) = atls::client::connect(&format!("{cp}:{PORT_JOIN}"), &cfg)
            .await
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        ApiClient::new(channel)
            .issue_join_ticket(IssueJoinTicketRequest {
                disk_uuid: disk_uuid.into(),
                certificate_request: csr.der().to_vec(),
                is_control_plane: false,
                ..Default::default()
            })
            .await
            .map(|_| ())
    }
}
