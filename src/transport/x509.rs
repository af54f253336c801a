//! The identity in a client certificate, for `use_identity_as_username`: the subject's first
//! Common Name, or failing that the first DNS name or email address among its Subject Alternative
//! Names (mosquitto uses the Common Name the same way).
//!
//! A few lines of DER walking rather than an X.509 crate: only these two fields are read, and the
//! certificate has already been verified by rustls. Malformed input gives `None`, never a panic.

/// OID 2.5.4.3, commonName.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// OID 2.5.29.17, subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const VERSION: u8 = 0xA0;
const EXTENSIONS: u8 = 0xA3;
const SAN_EMAIL: u8 = 0x81;
const SAN_DNS: u8 = 0x82;

/// The username a certificate stands for, if it names one.
pub fn identity(cert_der: &[u8]) -> Option<String> {
    let tbs = Tbs::parse(cert_der)?;
    common_name(tbs.subject).or_else(|| tbs.extensions.and_then(first_alt_name))
}

/// Reads DER elements one after another from a slice.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and contents. Only the single-byte tags certificates use here.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 {
                return None;
            }
            let (bytes, after) = rest.split_at_checked(count)?;
            rest = after;
            bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b))
        };
        let (contents, after) = rest.split_at_checked(len)?;
        self.0 = after;
        Some((tag, contents))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (found, contents) if found == tag => Some(contents),
            _ => None,
        }
    }
}

/// The two parts of a TBSCertificate (RFC 5280, section 4.1) this module reads.
struct Tbs<'a> {
    subject: &'a [u8],
    extensions: Option<&'a [u8]>,
}

impl<'a> Tbs<'a> {
    fn parse(cert_der: &'a [u8]) -> Option<Tbs<'a>> {
        let certificate = Der(cert_der).expect(SEQUENCE)?;
        let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
        let (first, _) = tbs.next()?;
        if first == VERSION {
            tbs.next()?; // the serial number
        }
        // Signature algorithm, issuer and validity come before the subject.
        for _ in 0..3 {
            tbs.expect(SEQUENCE)?;
        }
        let subject = tbs.expect(SEQUENCE)?;
        tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo
        let mut extensions = None;
        while let Some((tag, contents)) = tbs.next() {
            if tag == EXTENSIONS {
                extensions = Some(Der(contents).expect(SEQUENCE)?);
            }
        }
        Some(Tbs {
            subject,
            extensions,
        })
    }
}

fn common_name(name: &[u8]) -> Option<String> {
    let mut rdns = Der(name);
    while let Some((tag, rdn)) = rdns.next() {
        if tag != SET {
            return None;
        }
        let mut attributes = Der(rdn);
        while let Some(attribute) = attributes.expect(SEQUENCE) {
            let mut parts = Der(attribute);
            if parts.expect(OID)? == OID_COMMON_NAME {
                let (string_tag, value) = parts.next()?;
                return directory_string(string_tag, value).filter(|cn| !cn.is_empty());
            }
        }
    }
    None
}

/// A DirectoryString's text, for the string types certificates use.
fn directory_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        // UTF8String
        0x0C => std::str::from_utf8(value).ok().map(str::to_owned),
        // PrintableString, IA5String
        0x13 | 0x16 => value
            .is_ascii()
            .then(|| value.iter().map(|&b| char::from(b)).collect()),
        // TeletexString, read as Latin-1 as most software does
        0x14 => Some(value.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16, big endian
        0x1E if value.len().is_multiple_of(2) => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// The first DNS name or email address in the subjectAltName extension.
fn first_alt_name(extensions: &[u8]) -> Option<String> {
    let mut list = Der(extensions);
    while let Some(extension) = list.expect(SEQUENCE) {
        let mut parts = Der(extension);
        if parts.expect(OID)? != OID_SUBJECT_ALT_NAME {
            continue;
        }
        let (mut tag, mut value) = parts.next()?;
        if tag == BOOLEAN {
            (tag, value) = parts.next()?;
        }
        if tag != OCTET_STRING {
            return None;
        }
        let mut names = Der(Der(value).expect(SEQUENCE)?);
        while let Some((tag, name)) = names.next() {
            if (tag == SAN_DNS || tag == SAN_EMAIL) && !name.is_empty() && name.is_ascii() {
                return std::str::from_utf8(name).ok().map(str::to_owned);
            }
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    use super::*;

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Starling tests");
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn the_common_name_comes_first() {
        let der = cert(
            Some("device-7"),
            vec![SanType::DnsName("d7.example".try_into().expect("dns"))],
        );
        assert_eq!(identity(&der).as_deref(), Some("device-7"));
        let unicode = cert(Some("capteur-é"), vec![]);
        assert_eq!(identity(&unicode).as_deref(), Some("capteur-é"));
    }

    #[test]
    fn without_a_common_name_the_first_dns_or_email_alt_name_is_used() {
        let dns = cert(
            None,
            vec![
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::DnsName("d8.example".try_into().expect("dns")),
                SanType::Rfc822Name("ops@example.com".try_into().expect("email")),
            ],
        );
        assert_eq!(identity(&dns).as_deref(), Some("d8.example"));
        let email = cert(
            None,
            vec![SanType::Rfc822Name(
                "ops@example.com".try_into().expect("email"),
            )],
        );
        assert_eq!(identity(&email).as_deref(), Some("ops@example.com"));
        let nothing = cert(None, vec![SanType::IpAddress([127, 0, 0, 1].into())]);
        assert_eq!(identity(&nothing), None);
    }

    #[test]
    fn truncated_or_garbage_input_gives_none() {
        let der = cert(Some("device-7"), vec![]);
        for cut in 0..der.len() {
            // Any prefix must parse to nothing or to the name, and never panic.
            let found = identity(&der[..cut]);
            assert!(found.is_none() || found.as_deref() == Some("device-7"));
        }
        assert_eq!(identity(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
        assert_eq!(identity(&[0x30, 0x80]), None);
        assert_eq!(identity(&[]), None);
    }
}
