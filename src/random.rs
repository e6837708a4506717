//! Random strings over an alphabet, for identifiers any module makes (device IDs, session
//! IDs, key versions). A leaf: it depends on nothing of ours.

use rand::Rng;

/// `len` characters drawn uniformly from `alphabet` (which must not be empty).
pub fn string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}
