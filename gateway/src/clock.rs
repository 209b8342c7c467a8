//! The gateway's two clocks, in one place: wall-clock milliseconds (token
//! expiry, `ping` acks, publish latency) and monotonic milliseconds (idle
//! timeouts, which must not jump with the system clock).

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds on a monotonic clock (since this process first asked).
pub fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let (wall, mono) = (now_ms(), mono_ms());
        assert!(wall > 1_600_000_000_000, "after 2020");
        assert!(mono_ms() >= mono);
    }
}
