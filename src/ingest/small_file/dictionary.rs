//! A column's dictionary while a small file is filled: each distinct value's index, found by a
//! hash table whose entries are indices into the column's PLAIN values (which hold every
//! distinct value once anyway), so a new value costs no allocation of its own.
//!
//! Why not `HashMap<Vec<u8>, u32>`: with std's SipHash and a `Vec` per distinct value, hashing
//! and allocating were ~6 % of all CPU samples of a 20,000-customer consolidated load (`perf`,
//! the partition writer threads: `sip::Hasher::write`, `hash_one`, `memcmp`, `malloc`).

use std::hash::BuildHasher;
use std::ops::Range;

use hashbrown::{DefaultHashBuilder, HashTable};

#[derive(Default)]
pub(super) struct Dictionary {
    /// Indices into `spans`, by the hash of the value.
    table: HashTable<u32>,
    /// Where each distinct value's bytes are in the column's PLAIN buffer, in index order.
    spans: Vec<Range<usize>>,
    hasher: DefaultHashBuilder,
}

impl Dictionary {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The index of `bytes`; a value not seen before gets the next index and is appended to
    /// `plain` by `append` (which returns where its bytes went).
    pub fn index(
        &mut self,
        plain: &mut Vec<u8>,
        bytes: &[u8],
        append: impl FnOnce(&mut Vec<u8>) -> Range<usize>,
    ) -> u32 {
        let hash = self.hasher.hash_one(bytes);
        let spans = &self.spans;
        let found = self
            .table
            .find(hash, |&i| plain[spans[i as usize].clone()] == *bytes);
        if let Some(&i) = found {
            return i;
        }
        let next = self.spans.len() as u32;
        self.spans.push(append(plain));
        let (spans, hasher) = (&self.spans, &self.hasher);
        self.table.insert_unique(hash, next, |&i| {
            hasher.hash_one(&plain[spans[i as usize].clone()])
        });
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_an_index_and_are_stored_once() {
        let mut dictionary = Dictionary::default();
        let mut plain = Vec::new();
        let values: Vec<Vec<u8>> = (0..5000u32)
            .map(|i| format!("value-{}", i % 1700).into_bytes())
            .chain([Vec::new(), b"value-1".to_vec()])
            .collect();
        let indices: Vec<u32> = values
            .iter()
            .map(|v| {
                dictionary.index(&mut plain, v, |plain| {
                    let start = plain.len();
                    plain.extend_from_slice(v);
                    start..plain.len()
                })
            })
            .collect();
        assert_eq!(dictionary.len(), 1701);
        for (v, &i) in values.iter().zip(&indices) {
            assert_eq!(&plain[dictionary.spans[i as usize].clone()], v.as_slice());
        }
        assert_eq!(indices[1], indices[5000 + 1]);
        assert_eq!(indices[1700], indices[0]);
    }
}
