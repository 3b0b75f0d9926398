//! GPT-2's reversible byte <-> printable-character mapping used by byte-level BPE vocabularies
//! (a space is `Ġ`, a newline `Ċ`, ...), as llama.cpp's `unicode_byte_to_utf8` builds it.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The character standing for each byte.
pub(crate) fn byte_to_char() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..=255u32 {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            let c = if printable {
                b
            } else {
                n += 1;
                255 + n
            };
            table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
        }
        table
    })
}

/// The byte each mapped character stands for.
pub(crate) fn char_to_byte() -> &'static HashMap<char, u8> {
    static MAP: OnceLock<HashMap<char, u8>> = OnceLock::new();
    MAP.get_or_init(|| {
        byte_to_char()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    })
}

/// llama.cpp's `llama_decode_text`: the bytes a byte-level token text stands for. A character
/// outside the mapping becomes `[UNK_BYTE_0x<utf8 hex><text>]`, exactly as llama.cpp renders it.
pub(crate) fn decode_byte_level(text: &str) -> Vec<u8> {
    let map = char_to_byte();
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match map.get(&c) {
            Some(&b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// The byte-level text of raw bytes (inverse of [`decode_byte_level`] on mapped text).
#[cfg(test)]
pub(crate) fn encode_byte_level(bytes: &[u8]) -> String {
    let table = byte_to_char();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_mapping() {
        let t = byte_to_char();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xAD], 'Ń');
        assert_eq!(char_to_byte().len(), 256);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_byte_level(&encode_byte_level(&all)), all);
        assert_eq!(
            decode_byte_level("a€"),
            b"a[UNK_BYTE_0xe282aca\xe2\x82\xac]".to_vec()
        );
    }
}
