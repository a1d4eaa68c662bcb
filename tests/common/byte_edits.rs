//! Edits of raw bytes for the fuzzers: a bit flipped, a byte set, inserted or
//! deleted, the tail cut, a short run copied elsewhere (duplicating, e.g., opcodes
//! with their arguments). Positions are taken modulo the input's length.

use proptest::prelude::*;

#[derive(Clone, Debug)]
pub enum ByteEdit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Copy a range elsewhere (duplicates opcodes with their arguments).
    Splice(usize, usize, usize),
}

pub fn apply(bytes: &mut Vec<u8>, m: &ByteEdit) {
    let len = bytes.len().max(1);
    match *m {
        ByteEdit::Flip(i, bit) => {
            if let Some(b) = bytes.get_mut(i % len) {
                *b ^= 1 << (bit % 8);
            }
        }
        ByteEdit::Set(i, v) => {
            if let Some(b) = bytes.get_mut(i % len) {
                *b = v;
            }
        }
        ByteEdit::Insert(i, v) => bytes.insert(i % (bytes.len() + 1), v),
        ByteEdit::Delete(i) => {
            if !bytes.is_empty() {
                bytes.remove(i % len);
            }
        }
        ByteEdit::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
        ByteEdit::Splice(from, n, to) => {
            let from = from % len;
            let end = (from + n % 16).min(bytes.len());
            let chunk = bytes.get(from..end).unwrap_or_default().to_vec();
            let to = to % (bytes.len() + 1);
            bytes.splice(to..to, chunk);
        }
    }
}

pub fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| ByteEdit::Set(i, v)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| ByteEdit::Insert(i, v)),
        any::<usize>().prop_map(ByteEdit::Delete),
        any::<usize>().prop_map(ByteEdit::Truncate),
        (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(a, n, b)| ByteEdit::Splice(a, n, b)),
    ]
}
