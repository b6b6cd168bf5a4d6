//! Lowercase hex, for secrets and signatures written as text (the cluster
//! key's signatures in Redis, device tokens).

/// `bytes` as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from lowercase or uppercase hex; `None` for anything else.
pub fn decode(hex: &[u8]) -> Option<Vec<u8>> {
    // from_str_radix alone would take a sign ("+1").
    if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(encode(&[0, 0xab, 0x7f]), "00ab7f");
        assert_eq!(decode(b"00AB7f"), Some(vec![0, 0xab, 0x7f]));
        for bad in [&b"0"[..], b"zz", b"+1", b"\xff\xff"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
