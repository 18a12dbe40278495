//! A guest task crate with a real crates.io dependency (`sha2`): an ordinary
//! crate, unit-tested natively with `cargo test`, run in the sandbox as wasm.
//!
//! ```
//! let digest = digest_task::sha256(b"abc".to_vec());
//! assert!(digest.starts_with("ba7816bf"));
//! ```

use asyncer_guest::task;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of the input bytes.
#[task]
pub fn sha256(bytes: Vec<u8>) -> String {
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 applied `rounds` times to `seed`: CPU work with a dependency.
#[task]
pub async fn hash_chain(input: (Vec<u8>, u32)) -> Result<String, String> {
    let (seed, rounds) = input;
    if rounds == 0 {
        return Err("rounds must be at least 1".into());
    }
    let mut state = Sha256::digest(&seed).to_vec();
    for _ in 1..rounds {
        state = Sha256::digest(&state).to_vec();
    }
    Ok(state.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_known_vector() {
        assert_eq!(
            sha256(b"abc".to_vec()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn async_tasks_are_unit_tested_with_block_on() {
        let once = asyncer_guest::block_on(hash_chain((b"abc".to_vec(), 1))).unwrap();
        assert_eq!(once, sha256(b"abc".to_vec()));
        assert!(asyncer_guest::block_on(hash_chain((vec![], 0))).is_err());
    }
}
