//! The open-file limit (`RLIMIT_NOFILE`) and what it allows: every
//! WebSocket connection holds one descriptor, and so do the Redis
//! connections, the listeners, the admin API's clients, handshakes in
//! progress and the files the process opens. `limits.max_conns = 0` takes
//! the node's connection cap from the soft limit minus [`reserve`], so that
//! a full node refuses upgrades with HTTP 503 instead of running out of
//! descriptors (when `accept` and Redis reconnects would fail).
//!
//! The binary raises the soft limit to the hard one at start-up
//! ([`raise_to_hard`]); systemd's `LimitNOFILE=` sets both.

/// Descriptors always kept out of the connection cap: the listeners, the
/// Redis connections (one multiplexed command connection and one Pub/Sub
/// connection per master, a few more while the topology is re-read),
/// the admin API's clients, log and `/proc` files.
pub const RESERVE_BASE: u64 = 64;

/// Besides [`RESERVE_BASE`], 1/`RESERVE_DIVISOR` of the limit is kept for
/// what grows with the load: TCP connections still in their HTTP request
/// (before the upgrade, bounded by the 5 s header timeout), sockets of
/// closed connections the kernel has not released yet, admin requests.
pub const RESERVE_DIVISOR: u64 = 20;

/// The cap used when the limit is infinite or cannot be read: far above
/// what one node serves, it leaves the other limits to decide.
pub const UNLIMITED_CAP: u32 = 1 << 20;

/// The open-file limit of the process: `(soft, hard)`; `None` for an
/// infinite value (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    /// The limit in force (what `open`/`accept` meet).
    pub soft: Option<u64>,
    /// How far an unprivileged process may raise `soft`.
    pub hard: Option<u64>,
}

/// Reads `RLIMIT_NOFILE`.
///
/// # Errors
/// The system call's error.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every Unix.
pub fn nofile() -> std::io::Result<NoFile> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes into the `rlimit` we pass, which lives for
    // the call; RLIMIT_NOFILE is a valid resource.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v as u64);
    Ok(NoFile {
        soft: finite(lim.rlim_cur),
        hard: finite(lim.rlim_max),
    })
}

/// Reads `RLIMIT_NOFILE` (not on this platform: unknown).
///
/// # Errors
/// Always [`std::io::ErrorKind::Unsupported`].
#[cfg(not(unix))]
pub fn nofile() -> std::io::Result<NoFile> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Raises the soft open-file limit to the hard one, when it is lower;
/// returns the limit before and after.
///
/// # Errors
/// The system calls' error (the limit is then unchanged).
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every Unix.
pub fn raise_to_hard() -> std::io::Result<(NoFile, NoFile)> {
    let before = nofile()?;
    if before.soft == before.hard {
        return Ok((before, before));
    }
    let to_rlim = |v: Option<u64>| v.map_or(libc::RLIM_INFINITY, |v| v as libc::rlim_t);
    let lim = libc::rlimit {
        rlim_cur: to_rlim(before.hard),
        rlim_max: to_rlim(before.hard),
    };
    // SAFETY: `setrlimit` only reads the `rlimit` we pass, which lives for
    // the call; raising the soft limit up to the hard one needs no
    // privilege.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((before, nofile()?))
}

/// Raises the soft open-file limit (not on this platform).
///
/// # Errors
/// Always [`std::io::ErrorKind::Unsupported`].
#[cfg(not(unix))]
pub fn raise_to_hard() -> std::io::Result<(NoFile, NoFile)> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Descriptors kept out of the connection cap for a soft limit of
/// `limit`: [`RESERVE_BASE`] + `limit` / [`RESERVE_DIVISOR`] (1,064 of
/// 20,000; 52,492 of 1,048,576).
pub fn reserve(limit: u64) -> u64 {
    RESERVE_BASE + limit / RESERVE_DIVISOR
}

/// The connection cap a soft limit of `limit` allows (`None`: infinite):
/// `limit` − [`reserve`], at most [`UNLIMITED_CAP`]. A limit too small for
/// the reserve (below 142) allows half of it (at least 1) instead, so a
/// tiny limit does not make a node that refuses everyone.
pub fn cap_for(limit: Option<u64>) -> u32 {
    let Some(limit) = limit else {
        return UNLIMITED_CAP;
    };
    let cap = limit.saturating_sub(reserve(limit)).max(limit / 2).max(1);
    u32::try_from(cap.min(u64::from(UNLIMITED_CAP))).unwrap_or(UNLIMITED_CAP)
}

/// The node's connection cap for `limits.max_conns = configured`: the
/// configured value, or with 0 [`cap_for`] the current soft limit
/// ([`UNLIMITED_CAP`] when it cannot be read).
pub fn max_conns(configured: u32) -> u32 {
    if configured > 0 {
        return configured;
    }
    match nofile() {
        Ok(limit) => cap_for(limit.soft),
        Err(_) => UNLIMITED_CAP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_a_reserve() {
        assert_eq!(reserve(20_000), 1_064);
        assert_eq!(cap_for(Some(20_000)), 18_936);
        assert_eq!(cap_for(Some(1024)), 1024 - 64 - 51);
        assert_eq!(cap_for(Some(1_048_576)), 1_048_576 - 64 - 52_428);
        // Too small for the reserve: half, never 0.
        assert_eq!(cap_for(Some(142)), 142 - 64 - 7);
        assert_eq!(cap_for(Some(141)), 70);
        assert_eq!(cap_for(Some(64)), 32);
        assert_eq!(cap_for(Some(1)), 1);
        assert_eq!(cap_for(Some(0)), 1);
        // Infinite, or absurdly large: capped.
        assert_eq!(cap_for(None), UNLIMITED_CAP);
        assert_eq!(cap_for(Some(u64::MAX)), UNLIMITED_CAP);
    }

    #[test]
    fn a_configured_cap_wins() {
        assert_eq!(max_conns(5), 5);
        let from_limit = max_conns(0);
        assert!(from_limit >= 1);
        #[cfg(unix)]
        {
            let limit = nofile().expect("getrlimit");
            assert_eq!(from_limit, cap_for(limit.soft));
            assert!(limit.soft <= limit.hard || limit.hard.is_none());
        }
    }
}
