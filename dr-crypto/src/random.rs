//! The one source of randomness for keys, salts and nonces: the operating system's generator.

use dr_core::{Error, ErrorKind, Result};
use ring::rand::{SecureRandom, SystemRandom};

/// Fill `buf` from the operating system's random number generator.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(buf).map_err(|_| {
        Error::new(
            ErrorKind::Other,
            "the operating system's random number generator failed",
        )
    })
}
