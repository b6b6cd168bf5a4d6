//! When a TLS certificate is valid: its `notBefore` and `notAfter`, read
//! from its DER with `yasna` (the ASN.1 reader rcgen already uses), so
//! that the server refuses an expired or not yet valid certificate at
//! start and on reload instead of serving one every client rejects, and
//! warns before one expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use yasna::tags::{TAG_GENERALIZEDTIME, TAG_UTCTIME};
use yasna::{ASN1Result, BERReader, Tag};

/// How long before a certificate expires the server starts warning (at
/// start, on reload, and once a day).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The period a certificate is valid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// What a certificate's validity means at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Valid, and for longer than [`EXPIRY_WARNING`].
    Valid,
    /// Valid, but expiring within [`EXPIRY_WARNING`]: this much is left.
    Expiring(Duration),
    /// Expired this long ago.
    Expired(Duration),
    /// Valid only in this long.
    NotYetValid(Duration),
}

impl Validity {
    /// Reads the validity of the X.509 certificate `der`; `None` if it is
    /// not one.
    pub fn of(der: &[u8]) -> Option<Validity> {
        yasna::parse_der(der, |certificate| {
            certificate.read_sequence(|certificate| {
                let validity = certificate.next().read_sequence(|tbs| {
                    // [0] version, optional; serial number; signature
                    // algorithm; issuer.
                    tbs.read_optional(|version| version.read_tagged(Tag::context(0), skip))?;
                    for _ in 0..3 {
                        skip(tbs.next())?;
                    }
                    let validity = tbs.next().read_sequence(|validity| {
                        let not_before = read_time(validity.next())?;
                        let not_after = read_time(validity.next())?;
                        Ok(Validity {
                            not_before,
                            not_after,
                        })
                    })?;
                    // Subject, key and the optional rest.
                    while tbs.read_optional(skip)?.is_some() {}
                    Ok(validity)
                })?;
                // Signature algorithm and signature.
                while certificate.read_optional(skip)?.is_some() {}
                Ok(validity)
            })
        })
        .ok()
    }

    /// What the validity means at `now`.
    pub fn at(&self, now: SystemTime) -> Standing {
        if let Ok(early) = self.not_before.duration_since(now) {
            if !early.is_zero() {
                return Standing::NotYetValid(early);
            }
        }
        match self.not_after.duration_since(now) {
            Err(expired) => Standing::Expired(expired.duration()),
            Ok(left) if left <= EXPIRY_WARNING => Standing::Expiring(left),
            Ok(_) => Standing::Valid,
        }
    }
}

fn skip(reader: BERReader<'_, '_>) -> ASN1Result<()> {
    reader.read_der().map(drop)
}

/// A UTCTime or a GeneralizedTime.
fn read_time(reader: BERReader<'_, '_>) -> ASN1Result<SystemTime> {
    let seconds = match reader.lookahead_tag()? {
        TAG_UTCTIME => reader.read_utctime()?.datetime().unix_timestamp(),
        TAG_GENERALIZEDTIME => reader.read_generalized_time()?.datetime().unix_timestamp(),
        _ => reader.read_utctime()?.datetime().unix_timestamp(),
    };
    Ok(match u64::try_from(seconds) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()),
    })
}

/// Days, rounded down, for messages.
pub fn days(duration: Duration) -> u64 {
    duration.as_secs() / (24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_validity_of_a_certificate_is_read_and_judged() {
        let der = certificate((2020, 1, 1), (2030, 1, 1));
        let validity = Validity::of(&der).unwrap();
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(
            validity
                .not_after
                .duration_since(validity.not_before)
                .unwrap(),
            day * 3653
        );
        assert_eq!(validity.at(validity.not_before + day), Standing::Valid);
        assert_eq!(
            validity.at(validity.not_after - day * 3),
            Standing::Expiring(day * 3)
        );
        assert_eq!(
            validity.at(validity.not_after + day),
            Standing::Expired(day)
        );
        assert_eq!(
            validity.at(validity.not_before - day * 2),
            Standing::NotYetValid(day * 2)
        );
        // A date past 2049 is a GeneralizedTime.
        let far = Validity::of(&certificate((2020, 1, 1), (2060, 1, 1))).unwrap();
        assert!(far.not_after > validity.not_after);
        assert_eq!(Validity::of(b"not a certificate"), None);
    }
}
