//! The GPT-2 byte↔unicode table used by byte-level BPE vocabularies.
//!
//! Every byte maps to one printable char: the printable Latin-1 bytes
//! (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) map to themselves, the other 68 bytes map
//! in increasing order to U+0100, U+0101, … (so space 0x20 → `Ġ` U+0120).

use std::sync::OnceLock;

/// Whether `b` is one of the 188 bytes that map to their own code point.
fn is_self_mapped(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// byte → char (256 entries).
pub fn byte_to_char() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = ['\0'; 256];
        let mut next = 0x100u32;
        for b in 0..=255u8 {
            table[b as usize] = if is_self_mapped(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).unwrap_or('\u{FFFD}');
                next += 1;
                c
            };
        }
        table
    })
}

/// char → byte, `None` for chars outside the table.
pub fn char_to_byte(c: char) -> Option<u8> {
    /// Inverse table over U+0000..U+0143 (the whole image of [`byte_to_char`]).
    static INVERSE: OnceLock<[Option<u8>; 0x144]> = OnceLock::new();
    let inverse = INVERSE.get_or_init(|| {
        let mut inv = [None; 0x144];
        for (b, &c) in byte_to_char().iter().enumerate() {
            inv[c as usize] = Some(b as u8);
        }
        inv
    });
    inverse.get(c as usize).copied().flatten()
}

/// Encodes raw bytes as their GPT-2 unicode string (`b" hi"` → `"Ġhi"`).
pub fn bytes_to_string(bytes: &[u8]) -> String {
    let table = byte_to_char();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

/// Decodes a GPT-2 unicode string back to bytes; `Err(c)` names the first char
/// outside the table.
pub fn string_to_bytes(s: &str) -> Result<Vec<u8>, char> {
    s.chars().map(|c| char_to_byte(c).ok_or(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection() {
        let t = byte_to_char();
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(t[b as usize]), Some(b));
        }
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(char_to_byte('\u{0144}'), None);
        assert_eq!(char_to_byte(' '), None);
    }
}
