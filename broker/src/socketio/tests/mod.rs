//! Socket.IO codec tests: the official test suites' cases (named after
//! them), round trips, every refusal, and fixed-seed random inputs that must
//! never panic.

mod engine;
mod msgpack_parser;
mod packet;

/// A tiny deterministic generator (Knuth's MMIX LCG) for the random-input
/// loops: reproducible without a proptest dependency.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// A byte, biased towards the characters the codecs care about.
    pub fn byte(&mut self, alphabet: &[u8]) -> u8 {
        let r = self.next();
        if r % 3 < 1 {
            (r >> 8) as u8
        } else {
            alphabet[(r >> 8) as usize % alphabet.len()]
        }
    }

    pub fn bytes(&mut self, max_len: usize, alphabet: &[u8]) -> Vec<u8> {
        let len = self.next() as usize % (max_len + 1);
        (0..len).map(|_| self.byte(alphabet)).collect()
    }
}
