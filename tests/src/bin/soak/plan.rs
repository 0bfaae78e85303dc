//! What the soak does and when: a seeded random number generator, the choice of each
//! stream's file and fate (complete, dropped mid-audio, dropped mid-response) and the
//! kinds of bad requests. Pure: the same seed gives the same plan.

use std::time::Duration;

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): tiny, seedable, good enough to spread choices; not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// An independent generator for stream `index` (so streams do not share a sequence and
    /// their plans do not depend on the order tasks run in).
    pub fn fork(&self, index: u64) -> Self {
        let mut r = Self(self.0 ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        // Constants from the paper's reference implementation.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // 53 bits: the mantissa of an f64.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform index below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// How a stream ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    /// All audio is sent, the client half-closes and reads to the end.
    Complete,
    /// The client goes away after this much audio (mid-audio).
    DropMidAudio(Duration),
    /// The client goes away this long after its last audio (mid-response: finals pending).
    DropMidResponse(Duration),
}

impl Fate {
    /// When to drop, from the stream start, for audio of `length`; `None`: never.
    pub fn drop_after(self, length: Duration) -> Option<Duration> {
        match self {
            Self::Complete => None,
            Self::DropMidAudio(at) => Some(at),
            Self::DropMidResponse(after) => Some(length + after),
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::DropMidAudio(_) => "dropped mid-audio",
            Self::DropMidResponse(_) => "dropped mid-response",
        }
    }
}

/// Most of a dropped-mid-response stream's wait after its last audio: finals of tiny.en
/// on two cores take around a second (BENCHMARKS.md, streaming), so a drop within this
/// often lands while a final is being decoded.
const MID_RESPONSE_MAX_SECONDS: f64 = 0.8;

/// The fate of a stream of `length` audio: dropped with probability `disconnect_rate`
/// (half mid-audio, at 10-90 % of the audio; half mid-response), else complete.
pub fn choose_fate(rng: &mut Rng, disconnect_rate: f64, length: Duration) -> Fate {
    if rng.unit() >= disconnect_rate {
        return Fate::Complete;
    }
    if rng.unit() < 0.5 {
        Fate::DropMidAudio(length.mul_f64(rng.range(0.1, 0.9)))
    } else {
        Fate::DropMidResponse(Duration::from_secs_f64(
            rng.range(0.0, MID_RESPONSE_MAX_SECONDS),
        ))
    }
}

/// The next file to stream: a random one among those whose audio fits in `remaining`
/// (`None`: none fits, the stream slot is done).
pub fn choose_file(rng: &mut Rng, lengths: &[Duration], remaining: Duration) -> Option<usize> {
    let fitting: Vec<usize> = (0..lengths.len())
        .filter(|&i| lengths[i] <= remaining)
        .collect();
    (!fitting.is_empty()).then(|| fitting[rng.below(fitting.len())])
}

/// A request the server must refuse with INVALID_ARGUMENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BadKind {
    /// LINEAR16 at a rate outside the accepted 8-48 kHz.
    WrongSampleRate,
    /// LINEAR16 audio with an odd byte count (not a whole number of 16-bit samples).
    OddByteCount,
    /// Audio as the first message, no config.
    MissingConfig,
    /// A first message with nothing in it, or an encoding value the API does not define.
    Garbage,
}

impl BadKind {
    /// All kinds.
    pub const ALL: [Self; 4] = [
        Self::WrongSampleRate,
        Self::OddByteCount,
        Self::MissingConfig,
        Self::Garbage,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::WrongSampleRate => "wrong sample rate",
            Self::OddByteCount => "odd LINEAR16 byte count",
            Self::MissingConfig => "missing config",
            Self::Garbage => "garbage",
        }
    }
}

/// The wait before the next bad request for `per_minute` on average (uniform within
/// 50-150 % of the mean gap); `None` when bad requests are off.
pub fn bad_gap(rng: &mut Rng, per_minute: f64) -> Option<Duration> {
    (per_minute > 0.0).then(|| Duration::from_secs_f64(60.0 / per_minute * rng.range(0.5, 1.5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_forks_differ() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let base = Rng::new(7);
        assert_ne!(base.fork(0).next_u64(), base.fork(1).next_u64());
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(5) < 5);
        }
    }

    #[test]
    fn fates_follow_the_rate() {
        let mut r = Rng::new(1);
        let len = Duration::from_secs(10);
        assert!((0..200).all(|_| choose_fate(&mut r, 0.0, len) == Fate::Complete));
        for _ in 0..200 {
            match choose_fate(&mut r, 1.0, len) {
                Fate::Complete => panic!("rate 1 must always drop"),
                Fate::DropMidAudio(at) => assert!(at >= Duration::from_secs(1) && at <= len),
                Fate::DropMidResponse(after) => {
                    assert!(after.as_secs_f64() < MID_RESPONSE_MAX_SECONDS);
                }
            }
        }
        assert_eq!(Fate::Complete.drop_after(len), None);
        assert_eq!(
            Fate::DropMidResponse(Duration::from_secs(1)).drop_after(len),
            Some(Duration::from_secs(11))
        );
    }

    #[test]
    fn files_must_fit_the_time_left() {
        let mut r = Rng::new(2);
        let lengths = [Duration::from_secs(60), Duration::from_secs(5)];
        assert_eq!(
            choose_file(&mut r, &lengths, Duration::from_secs(10)),
            Some(1)
        );
        assert_eq!(choose_file(&mut r, &lengths, Duration::from_secs(4)), None);
        assert!(bad_gap(&mut r, 0.0).is_none());
        let gap = bad_gap(&mut r, 60.0).map(|d| d.as_secs_f64());
        assert!(gap.is_some_and(|g| (0.5..1.5).contains(&g)), "{gap:?}");
    }
}
