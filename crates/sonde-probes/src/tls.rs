//! TLS client configurations and the leaf certificate's expiry.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use sonde_http1::tls::{TlsError, Verify};

use crate::{Error, HttpProbe};

/// The TLS setup of one https probe; `Err` is a message reported on every check (the system's
/// roots could not be loaded).
pub(crate) type TlsSetup = Result<Arc<ClientConfig>, String>;

/// Builds TLS configurations, loading the system's roots at most once.
#[derive(Default)]
pub(crate) struct TlsFactory {
    platform: Option<TlsSetup>,
}

impl TlsFactory {
    pub(crate) fn for_probe(&mut self, p: &HttpProbe) -> Result<TlsSetup, Error> {
        let invalid = |problem: String| Error::InvalidTarget {
            probe: p.name.clone(),
            problem,
        };
        if p.insecure_skip_verify {
            return Ok(Ok(
                config(Verify::Insecure).map_err(|e| invalid(e.to_string()))?
            ));
        }
        if let Some(path) = &p.ca_certificate {
            let pem = std::fs::read(path).map_err(|e| {
                invalid(format!(
                    "cannot read ca_certificate {}: {e}; point it at a readable PEM file",
                    path.display()
                ))
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    invalid(format!(
                        "ca_certificate {} is not valid PEM: {e}; it must hold BEGIN CERTIFICATE blocks",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    invalid(format!(
                        "ca_certificate {} holds an unusable certificate: {e}",
                        path.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(invalid(format!(
                    "ca_certificate {} holds no certificate; it must hold PEM BEGIN CERTIFICATE blocks",
                    path.display()
                )));
            }
            return Ok(Ok(
                config(Verify::Roots(roots)).map_err(|e| invalid(e.to_string()))?
            ));
        }
        if let Some(setup) = &self.platform {
            return Ok(setup.clone());
        }
        let setup = match config(Verify::Platform) {
            Ok(c) => Ok(c),
            Err(e @ TlsError::PlatformRoots(_)) => {
                Err(format!("{e}; install them or set ca_certificate"))
            }
            Err(e) => return Err(invalid(e.to_string())),
        };
        self.platform = Some(setup.clone());
        Ok(setup)
    }
}

/// Probes speak HTTP/1.1 only.
fn config(verify: Verify) -> Result<Arc<ClientConfig>, TlsError> {
    sonde_http1::tls::client_config(verify, &[b"http/1.1"])
}

/// The server name to verify and send as SNI.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} cannot be used as a TLS server name: {e}"))
}

/// One DER element: (tag, contents, rest).
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags do not occur on the path we walk
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// The `notAfter` of a DER certificate, in seconds since the Unix epoch.
pub(crate) fn not_after(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] EXPLICIT version
    }
    let (0x02, _, rest) = tlv(rest)? else {
        return None; // serialNumber
    };
    let (SEQUENCE, _, rest) = tlv(rest)? else {
        return None; // signature algorithm
    };
    let (SEQUENCE, _, rest) = tlv(rest)? else {
        return None; // issuer
    };
    let (SEQUENCE, validity, _) = tlv(rest)? else {
        return None;
    };
    let (_, _, validity) = tlv(validity)?; // notBefore
    let (tag, time, _) = tlv(validity)?;
    parse_time(tag, time)
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn parse_time(tag: u8, s: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match tag {
        0x17 if s.len() == 13 => {
            let yy = digits(&s[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        0x18 if s.len() == 15 => (digits(&s[..4])?, &s[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let minute = digits(&rest[6..8])?;
    let second = digits(&rest[8..10])?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(0x18, b"20500101000000Z"), Some(2_524_608_000));
        assert_eq!(parse_time(0x17, b"7001010000Z"), None);
        assert_eq!(parse_time(0x17, b"701301000000Z"), None);
        assert_eq!(parse_time(0x18, b"2050010100000+Z"), None);
    }

    #[test]
    fn certificate_expiry() {
        for (year, unix) in [(2031, 1_935_792_000), (2055, 2_693_174_400)] {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            params.not_after = rcgen::date_time_ymd(year, 5, 6);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(not_after(cert.der()), Some(unix), "{year}");
        }
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
        let key = rcgen::KeyPair::generate().unwrap();
        let der = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec();
        for cut in 0..der.len() {
            let _ = not_after(&der[..cut]);
        }
    }
}
