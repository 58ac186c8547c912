//! The little DER and PEM reading the TDX checks need beyond `x509-parser`: the SGX extension
//! of a PCK certificate (a SEQUENCE of `{OID, value}` pairs), the signed part of a CRL, and
//! strict PEM chains (only `BEGIN/END CERTIFICATE` blocks of base64 lines; trailing NUL bytes
//! after the last block, as DCAP quotes carry them, and nothing else).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// One DER element: tag, contents, and the whole encoding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) value: &'a [u8],
    pub(crate) raw: &'a [u8],
}

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_ENUMERATED: u8 = 0x0A;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

/// Reads one element from the front of `b`; returns it and the rest. Short-form and long-form
/// lengths up to 4 bytes; indefinite lengths and multi-byte tags are refused.
pub(crate) fn tlv(b: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let (&tag, rest) = b.split_first().ok_or("empty DER element")?;
    if tag & 0x1F == 0x1F {
        return Err(format!("multi-byte DER tag {tag:#04x}"));
    }
    let (&l0, rest) = rest.split_first().ok_or("DER element without length")?;
    let (len, rest) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(format!("bad DER length prefix {l0:#04x}"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(format!(
            "DER element {tag:#04x} claims {len} bytes, {} left",
            rest.len()
        ));
    }
    let header = b.len() - rest.len();
    Ok((
        Tlv {
            tag,
            value: &rest[..len],
            raw: &b[..header + len],
        },
        &rest[len..],
    ))
}

/// Reads one element that must carry `tag`.
pub(crate) fn expect<'a>(b: &'a [u8], tag: u8, what: &str) -> Result<(Tlv<'a>, &'a [u8]), String> {
    let (t, rest) = tlv(b)?;
    if t.tag != tag {
        return Err(format!(
            "{what}: DER tag {:#04x}, expected {tag:#04x}",
            t.tag
        ));
    }
    Ok((t, rest))
}

/// Every element of a SEQUENCE's contents.
pub(crate) fn elements(mut b: &[u8]) -> Result<Vec<Tlv<'_>>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (t, rest) = tlv(b)?;
        out.push(t);
        b = rest;
    }
    Ok(out)
}

/// A non-negative DER INTEGER that fits `u32` (leading zero octet allowed).
pub(crate) fn uint(t: &Tlv<'_>, what: &str) -> Result<u32, String> {
    if t.tag != TAG_INTEGER && t.tag != TAG_ENUMERATED {
        return Err(format!("{what}: DER tag {:#04x} is not an INTEGER", t.tag));
    }
    let v = t.value;
    if v.is_empty() || v[0] & 0x80 != 0 {
        return Err(format!("{what}: empty or negative INTEGER"));
    }
    let digits: &[u8] = if v.len() > 1 && v[0] == 0 { &v[1..] } else { v };
    if digits.len() > 4 {
        return Err(format!(
            "{what}: INTEGER {} exceeds 32 bits",
            hex::encode(v)
        ));
    }
    Ok(digits
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

/// `AlgorithmIdentifier { ecdsa-with-SHA256 }` in its one DER encoding (no parameters).
pub(crate) const ECDSA_WITH_SHA256: [u8; 12] = [
    0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02,
];

/// Splits a signed X.509 structure (certificate or CRL: `SEQUENCE { tbs, signatureAlgorithm,
/// signatureValue }`) into the signed bytes and the DER signature, requiring exactly
/// ecdsa-with-SHA256, a BIT STRING without unused bits, and no trailing bytes. Byte-exact on
/// purpose: the outer algorithm is not covered by the signature, so only its one encoding is
/// accepted.
pub(crate) fn signed_parts(der: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (outer, rest) = expect(der, TAG_SEQUENCE, "signed structure")?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the signed structure", rest.len()));
    }
    let (tbs, rest) = expect(outer.value, TAG_SEQUENCE, "signed part")?;
    let (alg, rest) = tlv(rest)?;
    if alg.raw != ECDSA_WITH_SHA256 {
        return Err(format!(
            "signature algorithm {} is not ecdsa-with-SHA256",
            hex::encode(alg.raw)
        ));
    }
    let (sig, rest) = expect(rest, 0x03, "signature value")?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the signature value", rest.len()));
    }
    match sig.value.split_first() {
        Some((0, sig)) => Ok((tbs.raw, sig)),
        _ => Err("signature BIT STRING has unused bits".into()),
    }
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Decodes a PEM certificate chain strictly: one or more `CERTIFICATE` blocks, base64 lines
/// (canonical padding, no stray bits), `\n` or `\r\n` line ends, blank lines between blocks,
/// and trailing NUL bytes at the very end. Anything else is an error, so no byte of the text
/// can change without changing the decoded certificates or being refused.
pub(crate) fn pem_chain(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let end = text.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let text = std::str::from_utf8(&text[..end]).map_err(|e| format!("PEM is not UTF-8: {e}"))?;
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        let line = line.strip_suffix('\r').unwrap_or(line);
        match (&mut body, line) {
            (None, "") => {}
            (None, BEGIN) => body = Some(String::new()),
            (None, other) => {
                return Err(format!(
                    "PEM line {}: {:?} outside a certificate block",
                    i + 1,
                    other.chars().take(40).collect::<String>()
                ))
            }
            (Some(b), END) => {
                let der = STANDARD
                    .decode(b.as_bytes())
                    .map_err(|e| format!("PEM certificate {}: base64: {e}", certs.len() + 1))?;
                certs.push(der);
                body = None;
            }
            (Some(b), l) => {
                if l.is_empty()
                    || !l
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
                {
                    return Err(format!("PEM line {}: not a base64 line", i + 1));
                }
                b.push_str(l);
            }
        }
        if last && body.is_some() {
            return Err("PEM certificate block is not terminated".into());
        }
    }
    if certs.is_empty() {
        return Err("no PEM certificate".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_lengths_and_errors() {
        let (t, rest) = tlv(&[0x04, 0x02, 0xAA, 0xBB, 0x05]).unwrap();
        assert_eq!((t.tag, t.value, rest), (4, &[0xAA, 0xBB][..], &[5u8][..]));
        let long = [&[0x04, 0x81, 0x80][..], &[7u8; 0x80]].concat();
        assert_eq!(tlv(&long).unwrap().0.value.len(), 0x80);
        for bad in [
            &[][..],
            &[0x04],
            &[0x04, 0x80],
            &[0x04, 0x85, 1, 1, 1, 1, 1],
            &[0x04, 0x03, 1],
            &[0x1F, 1, 0],
        ] {
            assert!(tlv(bad).is_err(), "{bad:?}");
        }
        let int = |v: &[u8]| uint(&tlv(v).unwrap().0, "x");
        assert_eq!(int(&[2, 1, 5]), Ok(5));
        assert_eq!(int(&[2, 2, 0, 0xd9]), Ok(0xd9));
        assert!(int(&[2, 1, 0x80]).is_err());
        assert!(int(&[2, 5, 1, 2, 3, 4, 5]).is_err());
        assert!(int(&[4, 1, 5]).is_err());
    }

    #[test]
    fn pem_is_strict() {
        let ok = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n\0\0";
        assert_eq!(pem_chain(ok.as_bytes()).unwrap(), vec![vec![1, 2, 3]]);
        let crlf = ok.replace('\n', "\r\n");
        assert_eq!(pem_chain(crlf.as_bytes()).unwrap(), vec![vec![1, 2, 3]]);
        for bad in [
            "",
            "AQID",
            "-----BEGIN CERTIFICATE-----\nAQID\n",
            "-----BEGIN CERTIFICATE-----\nAQ\x0bID\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n\0x",
            "junk\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n",
        ] {
            assert!(pem_chain(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // AQI= decodes (canonical); AQJ= has stray bits and is refused.
        assert!(
            pem_chain(b"-----BEGIN CERTIFICATE-----\nAQJ=\n-----END CERTIFICATE-----").is_err()
        );
    }
}
