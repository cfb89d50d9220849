//! Random strings for secrets and names: API and session tokens, the embedded cluster's
//! password, temporary file names. Used by every layer, so it belongs to none of them.

use rand::distributions::Alphanumeric;
use rand::Rng;

/// A random string of ASCII letters and digits from the OS-seeded CSPRNG.
pub fn random_token(length: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}
