//! The principal a verified client certificate names
//! (`auth.client_cert_principal`).

use tokio_rustls::rustls::pki_types::CertificateDer;

/// Which part of a client certificate is the principal's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateName {
    /// Certificates name no principal: every call needs a token.
    None,
    /// The subject's common name (exactly one).
    SubjectCn,
    /// The first DNS subject alternative name.
    SanDns,
    /// The first URI subject alternative name (e.g. a SPIFFE id).
    SanUri,
}

impl CertificateName {
    /// A value of `auth.client_cert_principal` (validated with the
    /// configuration).
    pub fn parse(value: &str) -> Option<CertificateName> {
        match value {
            "none" => Some(CertificateName::None),
            "subject_cn" => Some(CertificateName::SubjectCn),
            "san_dns" => Some(CertificateName::SanDns),
            "san_uri" => Some(CertificateName::SanUri),
            _ => None,
        }
    }

    /// For messages: "subject common name", ...
    pub fn describe(self) -> &'static str {
        match self {
            CertificateName::None => "nothing",
            CertificateName::SubjectCn => "subject common name",
            CertificateName::SanDns => "DNS subject alternative name",
            CertificateName::SanUri => "URI subject alternative name",
        }
    }

    /// The name `certificate` (already verified by the TLS layer) carries;
    /// `None` if it has none, or more than one common name.
    pub fn of(self, certificate: &CertificateDer) -> Option<String> {
        let cert = webpki::EndEntityCert::try_from(certificate).ok()?;
        match self {
            CertificateName::None => None,
            CertificateName::SubjectCn => common_name(cert.subject()),
            CertificateName::SanDns => cert.valid_dns_names().next().map(str::to_owned),
            CertificateName::SanUri => cert.valid_uri_names().next().map(str::to_owned),
        }
    }
}

/// DER tags of X.501 names.
const SET: u8 = 0x31;
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
const BMP_STRING: u8 = 0x1e;

/// The common name of a DER subject (the contents of its RDNSequence),
/// when there is exactly one in a string type partlog reads.
fn common_name(mut subject: &[u8]) -> Option<String> {
    let mut found = None;
    while !subject.is_empty() {
        let (tag, mut rdn, rest) = tlv(subject)?;
        subject = rest;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (tag, attribute, rest) = tlv(rdn)?;
            rdn = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = tlv(attribute)?;
            if tag != OID || oid != COMMON_NAME {
                continue;
            }
            if found.is_some() {
                return None;
            }
            let (tag, bytes, _) = tlv(value)?;
            found = Some(decode_string(tag, bytes)?);
        }
    }
    found
}

fn decode_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        UTF8_STRING => String::from_utf8(bytes.to_vec()).ok(),
        PRINTABLE_STRING | IA5_STRING if bytes.is_ascii() => String::from_utf8(bytes.to_vec()).ok(),
        BMP_STRING if bytes.len() % 2 == 0 => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// One DER element: (tag, contents, what follows); `None` when truncated
/// or not definite-length.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (digits, rest) = rest.split_at(count);
        let len = digits
            .iter()
            .fold(0u64, |len, &digit| (len << 8) | u64::from(digit));
        (usize::try_from(len).ok()?, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn certificate(params: CertificateParams) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn params(cn: Option<&str>, sans: Vec<SanType>) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "partlog tests");
        if let Some(cn) = cn {
            name.push(DnType::CommonName, cn);
        }
        name.push(DnType::CountryName, "DE");
        params.distinguished_name = name;
        params.subject_alt_names = sans;
        params
    }

    #[test]
    fn names_come_from_the_configured_part() {
        let cert = certificate(params(
            Some("billing-service"),
            vec![
                SanType::DnsName("billing.internal".try_into().unwrap()),
                SanType::URI("spiffe://example.org/billing".try_into().unwrap()),
                SanType::DnsName("second.internal".try_into().unwrap()),
            ],
        ));
        assert_eq!(
            CertificateName::SubjectCn.of(&cert).as_deref(),
            Some("billing-service")
        );
        assert_eq!(
            CertificateName::SanDns.of(&cert).as_deref(),
            Some("billing.internal")
        );
        assert_eq!(
            CertificateName::SanUri.of(&cert).as_deref(),
            Some("spiffe://example.org/billing")
        );
        assert_eq!(CertificateName::None.of(&cert), None);
    }

    #[test]
    fn missing_or_ambiguous_names_name_nobody() {
        let cert = certificate(params(None, vec![]));
        assert_eq!(CertificateName::SubjectCn.of(&cert), None);
        assert_eq!(CertificateName::SanDns.of(&cert), None);
        assert_eq!(CertificateName::SanUri.of(&cert), None);
        assert_eq!(
            CertificateName::SubjectCn.of(&CertificateDer::from(vec![1, 2, 3])),
            None
        );

        // Two common names in one subject (hand-made RDNs).
        let rdn = |cn: &[u8]| {
            let mut value = vec![UTF8_STRING, cn.len() as u8];
            value.extend_from_slice(cn);
            let mut attribute = vec![OID, 3, 0x55, 0x04, 0x03];
            attribute.extend(value);
            let mut sequence = vec![SEQUENCE, attribute.len() as u8];
            sequence.extend(attribute);
            let mut set = vec![SET, sequence.len() as u8];
            set.extend(sequence);
            set
        };
        assert_eq!(common_name(&rdn(b"one")).as_deref(), Some("one"));
        assert_eq!(common_name(&[rdn(b"one"), rdn(b"two")].concat()), None);
    }

    #[test]
    fn strings_of_other_types_decode() {
        assert_eq!(
            decode_string(PRINTABLE_STRING, b"ab").as_deref(),
            Some("ab")
        );
        assert_eq!(decode_string(IA5_STRING, b"a@b").as_deref(), Some("a@b"));
        assert_eq!(
            decode_string(BMP_STRING, &[0, b'h', 0, b'i']).as_deref(),
            Some("hi")
        );
        assert_eq!(decode_string(BMP_STRING, &[0]), None);
        assert_eq!(decode_string(PRINTABLE_STRING, &[0xc3, 0xa9]), None);
        assert_eq!(decode_string(0x14, b"teletex"), None);
    }

    #[test]
    fn long_form_lengths_decode() {
        let mut input = vec![0x04, 0x82, 0x01, 0x00];
        input.extend(vec![7; 256]);
        input.push(0xff);
        let (tag, contents, rest) = tlv(&input).unwrap();
        assert_eq!((tag, contents.len(), rest), (0x04, 256, &[0xff][..]));
        assert_eq!(tlv(&[0x04, 0x80]), None, "indefinite length");
        assert_eq!(tlv(&[0x04, 0x85, 1, 1, 1, 1, 1]), None, "five length bytes");
        assert_eq!(tlv(&[0x04, 0x02, 0x00]), None, "truncated");
    }

    proptest! {
        #[test]
        fn no_bytes_make_the_subject_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = common_name(&bytes);
        }
    }
}
