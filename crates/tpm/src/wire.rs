//! Raw TPM 2.0 commands on swtpm's unix socket.
//!
//! swtpm's `--server type=unixio` channel carries plain TPM command and response bytes (no
//! framing). Every command here opens its own connection, sends one command and reads one
//! response, as libtss2's swtpm TCTI did over TCP: several processes of one node can share the
//! one swtpm command by command, and nothing stays in the TPM between calls (no resource
//! manager). Authorisation is by password sessions (`TPM_RS_PW`): the node's authorisation value
//! travels in the command, over a socket only the node's user can open.
//!
//! Only the few commands the node needs are built, each by a function below; responses are
//! checked for their header and response code, then handed back as the parameter area.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::TpmError;

pub(crate) const TPM_ST_NO_SESSIONS: u16 = 0x8001;
pub(crate) const TPM_ST_SESSIONS: u16 = 0x8002;
pub(crate) const TPM_RS_PW: u32 = 0x4000_0009;
pub(crate) const TPM_RH_OWNER: u32 = 0x4000_0001;
pub(crate) const TPM_RH_LOCKOUT: u32 = 0x4000_000A;
pub(crate) const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
pub(crate) const TPM_ALG_NULL: u16 = 0x0010;

pub(crate) const CC_HIERARCHY_CHANGE_AUTH: u32 = 0x0000_0129;
pub(crate) const CC_CREATE_PRIMARY: u32 = 0x0000_0131;
pub(crate) const CC_DA_LOCK_RESET: u32 = 0x0000_0139;
pub(crate) const CC_EVICT_CONTROL: u32 = 0x0000_0120;
pub(crate) const CC_QUOTE: u32 = 0x0000_0158;
pub(crate) const CC_READ_PUBLIC: u32 = 0x0000_0173;
pub(crate) const CC_GET_CAPABILITY: u32 = 0x0000_017A;
pub(crate) const CC_GET_RANDOM: u32 = 0x0000_017B;
pub(crate) const CC_PCR_READ: u32 = 0x0000_017E;
pub(crate) const CC_PCR_EXTEND: u32 = 0x0000_0182;
pub(crate) const CC_FLUSH_CONTEXT: u32 = 0x0000_0165;

/// Largest response we accept (TPM responses are ≤ 4 KiB on swtpm).
const MAX_RESPONSE: usize = 64 * 1024;
/// One command's budget (a quote takes ~4 ms on swtpm).
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// One command: its code, handles, optional password authorisation for the first handle, and
/// the marshalled parameters.
pub(crate) struct Command<'a> {
    pub name: &'static str,
    pub code: u32,
    pub handles: &'a [u32],
    /// `Some(password)`: one `TPM_RS_PW` session authorising the first handle.
    pub auth: Option<&'a [u8]>,
    pub params: Vec<u8>,
}

impl Command<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.params.len());
        body.extend_from_slice(&self.code.to_be_bytes());
        for h in self.handles {
            body.extend_from_slice(&h.to_be_bytes());
        }
        let tag = match self.auth {
            Some(password) => {
                let mut session = TPM_RS_PW.to_be_bytes().to_vec();
                put_tpm2b(&mut session, &[]); // nonceCaller
                session.push(0); // sessionAttributes
                put_tpm2b(&mut session, password); // hmac = the password
                body.extend_from_slice(&(session.len() as u32).to_be_bytes());
                body.extend_from_slice(&session);
                TPM_ST_SESSIONS
            }
            None => TPM_ST_NO_SESSIONS,
        };
        body.extend_from_slice(&self.params);
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&((6 + body.len()) as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

/// A successful response: the handles it returned and its parameter area.
pub(crate) struct Response {
    pub handles: Vec<u32>,
    pub params: Vec<u8>,
}

/// Sends `cmd` on a fresh connection to the swtpm socket at `path` and returns the response's
/// handles (`out_handles` of them) and parameters; a non-zero response code is
/// [`TpmError::Command`].
pub(crate) fn execute(
    path: &Path,
    cmd: &Command<'_>,
    out_handles: usize,
) -> Result<Response, TpmError> {
    let bytes = cmd.encode();
    let mut attempt = 0u32;
    loop {
        let raw = transact(path, cmd.name, &bytes)?;
        match parse_response(cmd.name, &raw, out_handles, cmd.auth.is_some()) {
            // TPM_RC_YIELDED, TPM_RC_TESTING, TPM_RC_RETRY: "try again" warnings (ESYS
            // retries them too); swtpm answers RETRY e.g. while it prepares ECC keys.
            Err(TpmError::Command { rc, .. })
                if matches!(rc, 0x908 | 0x90A | 0x922) && attempt < RETRIES =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(u64::from(attempt)));
            }
            other => return other,
        }
    }
}

/// Attempts after a TPM "try again" warning (each waits 1 ms longer than the last).
const RETRIES: u32 = 20;

/// One raw exchange: connect, send, read one response (header first, then its declared size).
pub(crate) fn transact(path: &Path, name: &'static str, bytes: &[u8]) -> Result<Vec<u8>, TpmError> {
    let mut s = UnixStream::connect(path).map_err(|source| TpmError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let io = |source| TpmError::Io {
        command: name,
        source,
    };
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    s.write_all(bytes).map_err(io)?;
    let mut header = [0u8; 10];
    s.read_exact(&mut header).map_err(io)?;
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    if !(10..=MAX_RESPONSE).contains(&size) {
        return Err(TpmError::Unexpected(format!(
            "{name}: response declares {size} bytes"
        )));
    }
    let mut out = header.to_vec();
    out.resize(size, 0);
    s.read_exact(&mut out[10..]).map_err(io)?;
    Ok(out)
}

fn parse_response(
    name: &'static str,
    raw: &[u8],
    out_handles: usize,
    sessions: bool,
) -> Result<Response, TpmError> {
    let bad = |what: &str| TpmError::Unexpected(format!("{name}: {what}"));
    let rc = u32::from_be_bytes([raw[6], raw[7], raw[8], raw[9]]);
    if rc != 0 {
        return Err(TpmError::Command { command: name, rc });
    }
    let tag = u16::from_be_bytes([raw[0], raw[1]]);
    let mut pos = 10;
    let mut handles = Vec::with_capacity(out_handles);
    for _ in 0..out_handles {
        let h = raw
            .get(pos..pos + 4)
            .ok_or_else(|| bad("truncated handle"))?;
        handles.push(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
        pos += 4;
    }
    let params = if tag == TPM_ST_SESSIONS && sessions {
        let p = raw
            .get(pos..pos + 4)
            .ok_or_else(|| bad("truncated parameterSize"))?;
        let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        pos += 4;
        raw.get(pos..pos + len)
            .ok_or_else(|| bad("parameterSize beyond the response"))?
            .to_vec()
    } else {
        raw[pos..].to_vec()
    };
    Ok(Response { handles, params })
}

pub(crate) fn put_tpm2b(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    out.extend_from_slice(v);
}

/// A bounds-checked reader over response parameters.
pub(crate) struct Params<'a> {
    buf: &'a [u8],
    pos: usize,
    command: &'static str,
}

impl<'a> Params<'a> {
    pub(crate) fn new(command: &'static str, buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            command,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return Err(TpmError::Unexpected(format!(
                "{}: response parameters end at {} bytes, {n} more wanted at {}",
                self.command,
                self.buf.len(),
                self.pos
            )));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, TpmError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, TpmError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn tpm2b(&mut self) -> Result<&'a [u8], TpmError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }
}

/// A readable name for a TPM response code (the ones this crate meets in practice).
pub(crate) fn rc_name(rc: u32) -> &'static str {
    // Format-one codes carry a handle/session/parameter number in bits 8..11.
    let base = if rc & 0x80 != 0 { rc & 0xBF } else { rc };
    match base {
        0x100 => "TPM_RC_INITIALIZE (TPM not started)",
        0x101 => "TPM_RC_FAILURE",
        0x14C => "TPM_RC_NV_DEFINED (handle in use)",
        0x921 => "TPM_RC_LOCKOUT (dictionary-attack lockout)",
        0x8E => "TPM_RC_AUTH_FAIL (wrong authorisation)",
        0xA2 => "TPM_RC_BAD_AUTH (wrong authorisation)",
        0x8B => "TPM_RC_HANDLE (no such object)",
        0x84 => "TPM_RC_VALUE",
        _ => "see TPM 2.0 Part 2, TPM_RC",
    }
}

/// True iff `rc` says the authorisation was wrong.
pub fn is_auth_failure(rc: u32) -> bool {
    rc & 0x80 != 0 && matches!(rc & 0xBF, 0x8E | 0xA2)
}
